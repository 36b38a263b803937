#!/usr/bin/env python
"""Label sentences with the teacher's logits, running the exported tier 2 in OpenVINO (not torch).

Resumable: logits are written in chunks (`<output>.parts/`), finished chunks are skipped on restart. Logits
kept from an earlier run of the same model on the first rows (`--known`, for instance the part of a corpus one
session labelled) fill the chunks they cover, so labelling can be spread over sessions that keep only git.

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


def label(model_dir: str | Path, texts: list, output: str | Path, *, batch_size: int = 32, chunk: int = 8192, max_length: int = 128, known: np.ndarray | None = None) -> np.ndarray:
    """Teacher logits for `texts` (float32, input order), saved to `output` (.npy). `known`: the model's logits
    for the first len(known) texts, taken instead of running it on the chunks they cover."""
    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    known = np.empty((0, 0), np.float32) if known is None else known
    if len(known) > len(texts):
        raise SystemExit(f"error: {len(known)} known logits for {len(texts)} texts")
    tier = Tier(model_dir, max_length=max_length)
    if len(known):
        check_known(tier, texts, known)
    started, done = time.perf_counter(), 0
    for index, start in enumerate(range(0, len(texts), chunk)):
        part = parts / f"{index:05d}.npy"
        if part.exists():
            continue
        end = min(start + chunk, len(texts))
        from_known = end <= len(known)
        logits = known[start:end].astype(np.float32) if from_known else tier.logits(tier.encoder.encode(texts[start:end]), batch_size)
        np.save(part.with_suffix(".tmp.npy"), logits)
        part.with_suffix(".tmp.npy").replace(part)
        if from_known:
            continue
        done += len(logits)
        rate = done / (time.perf_counter() - started)
        log.info("labelled %d/%d (%.0f sentences/s)", min(start + chunk, len(texts)), len(texts), rate)
    logits = np.concatenate([np.load(p) for p in sorted(parts.glob("[0-9]*.npy"))]) if texts else np.empty((0, 0), np.float32)
    assert len(logits) == len(texts), "parts do not match the input; delete the .parts folder"
    np.save(output, logits)
    return logits


def check_known(tier: Tier, texts: list, known: np.ndarray, sample: int = 32) -> None:
    """Refuse known logits of another shape, model or text order: the model reruns a seeded sample of them."""
    if known.ndim != 2 or known.shape[1] != len(tier.labels):
        raise SystemExit(f"error: known logits of shape {known.shape}; this model gives {len(tier.labels)} per text")
    rows = sorted(np.random.default_rng(0).choice(len(known), size=min(sample, len(known)), replace=False))
    rerun = tier.logits(tier.encoder.encode([texts[i] for i in rows]), batch_size=sample)
    if np.abs(rerun - known[rows].astype(np.float32)).max() > 0.05:  # float16 storage and batch composition move them by ~1e-3
        raise SystemExit("error: the known logits are not this model's on these texts (a sample rerun differs)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="tier-2 IR folder")
    p.add_argument("--texts", required=True, help="one sentence per line (a pair: two, tab-separated)")
    p.add_argument("--output", required=True, help=".npy file for the logits")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--known", default=None, help="this model's logits for the first rows of --texts (.npy, float16 is fine), kept from an earlier run")
    args = p.parse_args(argv)
    _common.setup_logging()
    texts = _common.read_corpus(args.texts)
    logits = label(args.model, texts, args.output, batch_size=args.batch_size, known=None if args.known is None else np.load(args.known))
    log.info("wrote %s %s", args.output, logits.shape)


if __name__ == "__main__":
    main()
