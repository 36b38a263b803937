#!/usr/bin/env python
"""How close the cascade runtime comes to its ideal throughput, measured side by side in one run.

On the same inputs: each tier alone (at its batch size, tokenization included; tier 1 also with the OpenVINO and
the Rust tokenizer instead of the default C++ WordPiece); the cascade at thresholds chosen
so that given shares of the inputs reach each later tier; and for each such setting the same work run phase by
phase with nothing overlapping (tier 1 alone over all inputs, then tier 2 alone over the ones that reach it,
...). With --three-tiers, a two-tier folder also runs as three tiers (its last tier twice: tier 1 -> tier 2 ->
tier 2 again), so the pipeline's third stage is measured with the same models. Configurations are interleaved
in rounds (shuffled order each round) and summarised by medians, with the spread, because this VM's speed
swings 2-10x within minutes. The ideal for a cascade whose tiers see shares s_k is 1 / sum_k s_k t_k, t_k the
seconds per instance of tier k alone; the phased run measures that work on the inputs that really reach each
tier (tier 1's hard inputs are longer than average, so slower later on).

Example:
    python scripts/bench_engine.py --models models/sst2 --data ../shared/data/sst2/dev.tsv --reach 0.1 --reach 0.3 \\
        --three-tiers --reach3 0.3,0.1
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tango_edge import Cascade  # noqa: E402
from tango_edge.autotune import thresholds_at_shares  # noqa: E402
from tango_edge.config import CascadeConfig  # noqa: E402
from tango_edge.data import read_tsv  # noqa: E402
from tango_edge.routing import SKIP_THRESHOLD  # noqa: E402


def load_texts(path: str | None, models: Path, n: int) -> list:
    if path and path.endswith(".tsv"):
        texts = read_tsv(path).texts
    else:
        texts = Path(path or models / "sample.txt").read_text(encoding="utf-8").splitlines()
    texts = [t for t in texts if t.strip()]
    return (texts * (n // len(texts) + 1))[:n]


def three_tier_folder(models: Path, root: Path) -> Path:
    """A three-tier view of a two-tier folder (its last tier also in the middle), made of symlinks."""
    config = CascadeConfig.load(models)
    folder = root / "three_tiers"
    folder.mkdir()
    first, last = config.tiers
    (folder / "tier1").symlink_to((models / first.dir).resolve())
    (folder / "tier2").symlink_to((models / last.dir).resolve())
    (folder / "tier3").symlink_to((models / last.dir).resolve())
    raw = config.to_dict()
    raw["tiers"] = [{"dir": "tier1", "threshold": first.threshold, "temperature": first.temperature}, {"dir": "tier2", "threshold": 0.9}, {"dir": "tier3"}]
    (folder / "cascade.json").write_text(json.dumps(raw))
    return folder


def time_run(cascade: Cascade, texts: list) -> float:
    started = time.perf_counter()
    for _ in cascade.predict_iter(texts):
        pass
    return len(texts) / (time.perf_counter() - started)


def phased(alone: list[Cascade], reaching: list[list], texts: list) -> float:
    """Each tier alone over the inputs that reach it, one after the other: the cascade's work with no overlap."""
    started = time.perf_counter()
    for engine, inputs in zip(alone, reaching):
        for _ in engine.predict_iter(inputs):
            pass
    return len(texts) / (time.perf_counter() - started)


def alone_thresholds(num_tiers: int, k: int) -> list[float]:
    """Thresholds under which tier k (0-based) alone answers everything."""
    return [SKIP_THRESHOLD] * k + ([0.0] if k < num_tiers - 1 else []) + [SKIP_THRESHOLD] * max(0, num_tiers - 2 - k)


def setups(folder: Path, texts: list, reach_settings: list[list[float]], overrides: dict, label: str) -> tuple[dict, dict, list[str]]:
    """Engines and timed runs for one folder: each tier alone, and per reach setting the cascade and its phases."""
    probe = Cascade.from_dir(folder, **overrides)
    n_tiers = len(probe.tiers)
    temperatures = [t.temperature for t in probe.config.tiers[:-1]]
    engines, runs, notes = {}, {}, []
    for k in range(n_tiers):
        engines[f"{label}tier{k + 1} alone"] = Cascade.from_dir(folder, thresholds=alone_thresholds(n_tiers, k), **overrides)
    alone = [engines[f"{label}tier{k + 1} alone"] for k in range(n_tiers)]
    if not label:  # the default tokenizer (the C++ WordPiece for ASCII texts, else the OpenVINO one) against each alone
        for tokenizer in ("openvino", "rust"):
            engines[f"tier1, {tokenizer} tokenizer"] = Cascade.from_dir(folder, thresholds=alone_thresholds(n_tiers, 0), tokenizer=tokenizer, **overrides)
    for reach in reach_settings:
        if len(reach) != n_tiers - 1:
            raise SystemExit(f"error: {folder} has {n_tiers} tiers: give {n_tiers - 1} reach shares per setting, got {reach}")
        thresholds, reaching = thresholds_at_shares(probe.tiers, temperatures, texts, reach, probe.config.thresholds)
        name = f"{label}cascade reach {'/'.join(f'{r:g}' for r in reach)}"
        engines[name] = Cascade.from_dir(folder, thresholds=thresholds, **overrides)
        runs[f"{label}phased reach {'/'.join(f'{r:g}' for r in reach)}"] = (functools.partial(phased, alone, [[texts[i] for i in idx] for idx in reaching]), [len(idx) / len(texts) for idx in reaching])
        lengths = np.array([len(e) for e in probe.tiers[0].encoder.encode(texts)], dtype=np.float64)
        notes.append(f"{name}: inputs reaching each tier are " + ", ".join(f"{lengths[idx].mean() / lengths.mean():.2f}x" if idx else "-" for idx in reaching) + " as long as the average")
    probe.close()
    for name, engine in engines.items():
        runs[name] = (functools.partial(time_run, engine), None)
    return engines, runs, notes


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--data", default=None, help="TSV or text file of inputs (default: the cascade's sample.txt)")
    p.add_argument("-n", type=int, default=2000, help="inputs per timed pass")
    p.add_argument("--reach", action="append", default=None, help="shares of all inputs reaching tiers 2..N, comma-separated; repeat for more settings (default 0.1 and 0.3 for two tiers)")
    p.add_argument("--three-tiers", action="store_true", help="also run a two-tier folder as three tiers (last tier twice)")
    p.add_argument("--reach3", action="append", default=None, help="for --three-tiers: shares reaching tiers 2 and 3 (default 0.3,0.1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-sizes", default=None, help="one per tier, comma-separated (default: the profile)")
    p.add_argument("--sort-window", type=int, default=None, help="inputs sorted by length together (default: cascade.json's)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    overrides = {"sort_window": args.sort_window}
    if args.batch_sizes:
        overrides["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    texts = load_texts(args.data, args.models, args.n)
    parse = lambda settings, default: [[float(x) for x in s.split(",")] for s in (settings or default)]
    engines, runs, notes = setups(args.models, texts, parse(args.reach, ["0.1", "0.3"]), overrides, "")
    scratch = tempfile.TemporaryDirectory()
    if args.three_tiers:
        folder = three_tier_folder(args.models, Path(scratch.name))
        more = setups(folder, texts, parse(args.reach3, ["0.3,0.1"]), {k: v for k, v in overrides.items() if k != "batch_sizes"}, "3t ")
        engines.update(more[0]), runs.update(more[1]), notes.extend(more[2])
    print(f"{len(texts)} inputs, {args.rounds} rounds, batch sizes {engines['tier1 alone'].config.batch_sizes}", file=sys.stderr)
    for engine in engines.values():  # warm-up: first inferences allocate
        time_run(engine, texts[: min(len(texts), 256)])
    speeds = {name: [] for name in runs}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            speeds[name].append(runs[name][0](texts))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    reach_of = {name: [t["reach_rate"] if t["items"] else 0.0 for t in engine.stats()["tiers"]] for name, engine in engines.items()}
    for engine in engines.values():
        engine.close()

    median = {n: statistics.median(v) for n, v in speeds.items()}
    rows = []
    print(f"\n{'configuration':<28} {'reach':>16} {'median/s':>10} {'spread':>15} {'ideal/s':>9} {'of ideal':>8}")
    for name in runs:
        label = name[:3] if name.startswith("3t ") else ""
        reach = runs[name][1] or reach_of.get(name)
        seconds = [1 / median[f"{label}tier{k + 1} alone"] for k in range(len(reach))]
        ideal = 1 / sum(s * t for s, t in zip(reach, seconds)) if "reach" in name else median[name]
        row = {"configuration": name, "reach": reach, "median_per_s": median[name], "min_per_s": min(speeds[name]), "max_per_s": max(speeds[name]), "rates_per_s": speeds[name], "ideal_per_s": ideal, "fraction_of_ideal": median[name] / ideal}
        rows.append(row)
        print(f"{name:<28} {'/'.join(f'{r:.3f}' for r in reach):>16} {median[name]:>10.1f} {row['min_per_s']:>7.0f}-{row['max_per_s']:<7.0f} {ideal:>9.1f} {row['fraction_of_ideal']:>8.2f}")
    print()
    ratios = {}
    for name in runs:
        if "cascade reach" in name:
            twin = name.replace("cascade reach", "phased reach")
            paired = sorted(a / b for a, b in zip(speeds[name], speeds[twin]))
            ratios[name] = {"median_ratio": median[name] / median[twin], "by_round": paired}
            print(f"{name} over its phased run: {median[name] / median[twin]:.2f}x (round by round {paired[0]:.2f}-{paired[-1]:.2f}x)")
    for note in notes:
        print(note)
    if args.json:
        Path(args.json).write_text(json.dumps({"inputs": len(texts), "rounds": args.rounds, "rows": rows, "pipelined_over_phased": ratios, "notes": notes}, indent=2))
    scratch.cleanup()


if __name__ == "__main__":
    main()
