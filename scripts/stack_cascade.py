#!/usr/bin/env python
"""Stack existing tier folders into one cascade folder, cheapest first, ready for `tango-edge calibrate`.

Each `--tier` is a tier folder (openvino_model.xml/.bin, tokenizer.json, config.json): a tier of another
cascade, or what export.py / quantize.py wrote. Task settings (task, metric, text and label columns, max length)
come from `--like`, a cascade folder of the same task, when given. The tiers are copied (a cascade folder is
self-contained); thresholds start at 0.9 until calibrate sets them.

Example (the accurate SST-2 cascade: the shipped CNN and MiniLM in front of the MPNet tier):
    python scripts/stack_cascade.py --like models/sst2 --tier models/sst2/tier1 --tier models/sst2/tier2 \\
        --tier build/mpnet_full/tier2_int8 --output build/sst2-accurate
    tango-edge calibrate --models build/sst2-accurate --data ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tango_edge.config import DEFAULT_THRESHOLD, CascadeConfig, TierConfig  # noqa: E402
from tango_edge.tier import MODEL_XML  # noqa: E402


def stack(tiers: list[Path], output: Path, like: Path | None = None, sample: Path | None = None) -> CascadeConfig:
    if len(tiers) < 2:
        raise SystemExit("error: a cascade needs at least two --tier folders")
    for tier in tiers:
        if not (tier / MODEL_XML).is_file():
            raise SystemExit(f"error: {tier} holds no {MODEL_XML}")
    template = CascadeConfig.load(like) if like else CascadeConfig()
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    tier_configs = []
    for index, tier in enumerate(tiers, start=1):
        shutil.copytree(tier, output / f"tier{index}")
        tier_configs.append(TierConfig(dir=f"tier{index}", threshold=None if index == len(tiers) else DEFAULT_THRESHOLD))
    config = dataclasses.replace(template, tiers=tier_configs)
    config.save(output)
    sample = sample or (like / "sample.txt" if like else None)
    if sample is not None and sample.is_file():
        shutil.copy(sample, output / "sample.txt")  # autotune's representative inputs
    return config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tier", type=Path, action="append", required=True, help="a tier folder; repeat, cheapest first")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--like", type=Path, default=None, help="a cascade folder of the same task to take the task settings (and sample.txt) from")
    p.add_argument("--sample", type=Path, default=None, help="representative inputs for autotune (default: --like's sample.txt)")
    args = p.parse_args(argv)
    config = stack(args.tier, args.output, args.like, args.sample)
    print(f"{args.output}: {config.num_tiers} tiers, task {config.task}; next: tango-edge calibrate --models {args.output} --data DEV.tsv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
