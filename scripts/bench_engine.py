#!/usr/bin/env python
"""How close the cascade runtime comes to its ideal throughput, measured side by side in one run.

On the same inputs: tier 1 alone and tier 2 alone (each at its batch size, tokenization included), and the
cascade at thresholds chosen so that given fractions f of the inputs are deferred, and for each f the same work
in two phases with nothing overlapping: tier 1 alone over all inputs, then tier 2 alone over the ones the cascade
defers. Configurations are interleaved in rounds (shuffled order each round) and summarised by medians, with the
spread, because this VM's speed swings 2-10x within minutes. The ideal for a cascade deferring f is
1 / (t1 + f * t2), t being seconds per instance for a tier alone; the two-phase run measures it on the deferred
inputs themselves (longer than average, so slower in tier 2).

Example:
    python scripts/bench_engine.py --models models/sst2 --data ../shared/data/sst2/dev.tsv --deferrals 0.1,0.3
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tango_edge import Cascade  # noqa: E402
from tango_edge.data import read_tsv  # noqa: E402
from tango_edge.calibrate import confidence_ranking, threshold_for_cut  # noqa: E402


def load_texts(path: str | None, models: Path, n: int) -> list:
    if path and path.endswith(".tsv"):
        texts = read_tsv(path).texts
    else:
        texts = Path(path or models / "sample.txt").read_text(encoding="utf-8").splitlines()
    texts = [t for t in texts if t.strip()]
    return (texts * (n // len(texts) + 1))[:n]


def thresholds_for(cascade: Cascade, texts: list, deferrals: list[float]) -> tuple[dict[float, float], dict[float, float], dict[float, list]]:
    """Thresholds under which exactly the least confident fraction f of `texts` goes to tier 2 (calibrate's rule),
    for each f the mean token count of those deferred inputs over that of all inputs (the ideal assumes a
    deferred input costs tier 2 the average, but tier 1's hard inputs tend to be the long ones), and the deferred
    inputs themselves, in input order."""
    encoded = cascade.tier1.encoder.encode(texts)
    ordered, order = confidence_ranking(cascade.tier1, encoded, cascade.config.temperature)
    lengths = np.array([len(e.ids) for e in encoded], dtype=np.float64)
    thresholds, length_ratio, deferred = {}, {}, {}
    for f in deferrals:
        cut = int(round(f * len(order)))
        thresholds[f] = threshold_for_cut(ordered, cut)
        length_ratio[f] = float(lengths[order[:cut]].mean() / lengths.mean()) if cut else 1.0
        deferred[f] = [texts[i] for i in sorted(order[:cut])]
    return thresholds, length_ratio, deferred


def time_run(cascade: Cascade, texts: list) -> tuple[float, float]:
    cascade.reset_stats()
    started = time.perf_counter()
    for _ in cascade.predict_iter(texts):
        pass
    elapsed = time.perf_counter() - started
    return len(texts) / elapsed, cascade.stats()["deferral_rate"]


def two_phases(tier1_alone: Cascade, tier2_alone: Cascade, deferred: list):
    """A run of tier 1 over all inputs, then of tier 2 over `deferred`: the cascade's work with no overlap."""

    def run(texts: list) -> tuple[float, float]:
        started = time.perf_counter()
        for engine, inputs in ((tier1_alone, texts), (tier2_alone, deferred)):
            for _ in engine.predict_iter(inputs):
                pass
        return len(texts) / (time.perf_counter() - started), len(deferred) / len(texts)

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--data", default=None, help="TSV or text file of inputs (default: the cascade's sample.txt)")
    p.add_argument("-n", type=int, default=2000, help="inputs per timed pass")
    p.add_argument("--deferrals", default="0.1,0.3", help="deferred fractions to measure")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tier1-batch-size", type=int, default=None)
    p.add_argument("--tier2-batch-size", type=int, default=None)
    p.add_argument("--tier1-streams", type=int, default=None, help="NUM_STREAMS override (0 = automatic)")
    p.add_argument("--tier2-streams", type=int, default=None)
    p.add_argument("--sort-window", type=int, default=None, help="inputs sorted by length together (default: cascade.json's)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    batch = {"tier1_batch_size": args.tier1_batch_size, "tier2_batch_size": args.tier2_batch_size, "tier1_streams": args.tier1_streams, "tier2_streams": args.tier2_streams, "sort_window": args.sort_window}
    base = Cascade.from_dir(args.models, **batch)
    texts = load_texts(args.data, args.models, args.n)
    deferrals = [float(f) for f in args.deferrals.split(",")]
    thresholds, length_ratio, deferred = thresholds_for(base, texts, deferrals)
    base.close()
    configs = {"tier1 alone": 0.0, "tier2 alone": 1.5, **{f"cascade f={f:g}": t for f, t in thresholds.items()}}
    engines = {name: Cascade.from_dir(args.models, threshold=t, **batch) for name, t in configs.items()}
    # The default tokenizer (the C++ core's WordPiece for ASCII texts, else the OpenVINO tokenizer) against each alone.
    for tokenizer in ("openvino", "rust"):
        engines[f"tier1, {tokenizer} tokenizer"] = Cascade.from_dir(args.models, threshold=0.0, tokenizer=tokenizer, **batch)
    runs = {name: functools.partial(time_run, engine) for name, engine in engines.items()}
    for f in deferrals:
        runs[f"two phases f={f:g}"] = two_phases(engines["tier1 alone"], engines["tier2 alone"], deferred[f])
    print(f"{len(texts)} inputs, batch sizes tier1={engines['tier1 alone'].config.tier1_batch_size} tier2={engines['tier1 alone'].config.tier2_batch_size}, {args.rounds} rounds", file=sys.stderr)
    for engine in engines.values():  # warm-up: first inferences allocate
        time_run(engine, texts[: min(len(texts), 256)])
    speeds = {name: [] for name in runs}
    measured_f = {name: 0.0 for name in runs}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            speed, f = runs[name](texts)
            speeds[name].append(speed)
            measured_f[name] = f
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {speeds[n][-1]:.0f}/s" for n in runs), file=sys.stderr)
    for engine in engines.values():
        engine.close()

    median = {n: statistics.median(v) for n, v in speeds.items()}
    t1, t2 = 1 / median["tier1 alone"], 1 / median["tier2 alone"]
    rows = []
    print(f"\n{'configuration':<22} {'deferred':>8} {'median/s':>10} {'spread':>15} {'ideal/s':>9} {'of ideal':>8} {'vs tier2':>8}")
    for name in runs:
        f = measured_f[name]
        ideal = 1 / (t1 + f * t2) if name.startswith(("cascade", "two phases")) else median[name]
        row = {"configuration": name, "deferred": f, "median_per_s": median[name], "min_per_s": min(speeds[name]), "max_per_s": max(speeds[name]), "ideal_per_s": ideal, "fraction_of_ideal": median[name] / ideal, "speedup_vs_tier2": median[name] / median["tier2 alone"]}
        rows.append(row)
        print(f"{name:<22} {f:>8.3f} {median[name]:>10.1f} {row['min_per_s']:>7.0f}-{row['max_per_s']:<7.0f} {ideal:>9.1f} {row['fraction_of_ideal']:>8.2f} {row['speedup_vs_tier2']:>7.2f}x")
    print(f"\ntier1/tier2 throughput ratio: {median['tier1 alone'] / median['tier2 alone']:.1f}x")
    for f in deferrals:
        cascade, phased = f"cascade f={f:g}", f"two phases f={f:g}"
        paired = sorted(a / b for a, b in zip(speeds[cascade], speeds[phased]))
        print(f"{cascade} over its two phases: {median[cascade] / median[phased]:.2f}x (round by round {paired[0]:.2f}-{paired[-1]:.2f}x)")
    print("deferred inputs' mean length over all inputs' (tokens): " + ", ".join(f"f={f:g} {r:.2f}x" for f, r in length_ratio.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"inputs": len(texts), "rounds": args.rounds, "rows": rows, "deferred_length_ratio": {str(f): r for f, r in length_ratio.items()}}, indent=2))


if __name__ == "__main__":
    main()
