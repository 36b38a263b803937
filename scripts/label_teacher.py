#!/usr/bin/env python
"""Label sentences with the teacher's logits, running the exported tier 2 in OpenVINO (not torch).

Resumable: logits are written in chunks (`<output>.parts/`), finished chunks are skipped on restart.

Example:
    python scripts/label_teacher.py --model build/sst2/tier2_int8 --texts build/sst2/augmented.txt \\
        --output build/sst2/augmented.logits.npy
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import _common
from _common import log

from tango_edge.tier import Tier


def label(model_dir: str | Path, texts: list, output: str | Path, *, batch_size: int = 32, chunk: int = 8192, max_length: int = 128) -> np.ndarray:
    """Teacher logits for `texts` (float32, input order), saved to `output` (.npy)."""
    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    tier = Tier(model_dir, max_length=max_length)
    started, done = time.perf_counter(), 0
    for index, start in enumerate(range(0, len(texts), chunk)):
        part = parts / f"{index:05d}.npy"
        if part.exists():
            continue
        logits = tier.logits(tier.encoder.encode(texts[start : start + chunk]), batch_size)
        np.save(part.with_suffix(".tmp.npy"), logits)
        part.with_suffix(".tmp.npy").replace(part)
        done += len(logits)
        rate = done / (time.perf_counter() - started)
        log.info("labelled %d/%d (%.0f sentences/s)", min(start + chunk, len(texts)), len(texts), rate)
    logits = np.concatenate([np.load(p) for p in sorted(parts.glob("[0-9]*.npy"))]) if texts else np.empty((0, 0), np.float32)
    assert len(logits) == len(texts), "parts do not match the input; delete the .parts folder"
    np.save(output, logits)
    return logits


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="tier-2 IR folder")
    p.add_argument("--texts", required=True, help="one sentence per line (a pair: two, tab-separated)")
    p.add_argument("--output", required=True, help=".npy file for the logits")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    _common.setup_logging()
    texts = _common.read_corpus(args.texts)
    logits = label(args.model, texts, args.output, batch_size=args.batch_size)
    log.info("wrote %s %s", args.output, logits.shape)


if __name__ == "__main__":
    main()
