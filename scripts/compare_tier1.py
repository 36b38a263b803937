#!/usr/bin/env python
"""Compare first-tier candidates in the cascade: dev metric, speed, and speedup at 99% of tier 2's.

For each distilled student (INT8 IR in <work>/tier1_<arch>_int8) and the INT8 tier 2: run both on dev, find the
lowest deferral rate whose cascade accuracy reaches --target x tier 2's, and time every tier alone
(tokenization included) in one interleaved run, so the speedups t2 / (t1 + f t2) compare like with like.
The best speedup at the target is the default first tier.

Example:
    python scripts/compare_tier1.py --work build/sst2 --archs cnn,cnn2,cnn3,cnn4,bow,bilstm --dev ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _common
from _common import log

from tango_edge.calibrate import analyse
from tango_edge.routing import Costs, tier_outputs, two_tier_reach
from tango_edge.timing import instances_per_second, measure_rounds, pass_texts, summarize
from tango_edge.data import read_tsv
from tango_edge.metrics import METRICS
from tango_edge.tier import Tier

MAX_LENGTH = 128
PASS_SENTENCES = {"tier1": 4096, "tier2": 256}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--tier2", default="tier2", help="prefix of the second tier's folders in --work (<prefix>_int8)")
    p.add_argument("--archs", default="cnn,cnn2,cnn3,cnn4,bow,bilstm")
    p.add_argument("--dev", required=True)
    p.add_argument("--text-columns", default="sentence", help="one column, or two comma-separated for a pair task")
    p.add_argument("--label-column", default="label")
    p.add_argument("--metric", default="accuracy", choices=METRICS, help="what the target keeps a share of")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--tier1-batch-size", type=int, default=64)
    p.add_argument("--tier2-batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    _common.setup_logging()

    dev = read_tsv(args.dev, args.text_columns.split(","), args.label_column)
    tiers = {arch: Tier(args.work / f"tier1_{arch}_int8", max_length=MAX_LENGTH) for arch in args.archs.split(",")}
    tier2 = Tier(args.work / f"{args.tier2}_int8", max_length=MAX_LENGTH)
    _, pred2 = tier_outputs(tier2.logits(tier2.encoder.encode(dev.texts), args.tier2_batch_size))
    num_classes = len(tier2.labels)

    timed = {**{arch: (tier, args.tier1_batch_size, PASS_SENTENCES["tier1"]) for arch, tier in tiers.items()}, "tier2": (tier2, args.tier2_batch_size, PASS_SENTENCES["tier2"])}
    texts = {name: pass_texts(dev.texts, count) for name, (_, _, count) in timed.items()}
    for name, (tier, size, _) in timed.items():  # warm-up
        instances_per_second(tier, texts[name][:256], size)
    rates = measure_rounds(list(timed), lambda name: instances_per_second(timed[name][0], texts[name], timed[name][1]), args.rounds, progress=lambda r, n: log.info("timing round %d/%d", r, n))
    speed = {name: summarize(values) for name, values in rates.items()}
    t2 = 1.0 / speed["tier2"]["median"]

    rows, m = {}, args.metric
    for arch, tier in tiers.items():
        analysis = analyse(tier.logits(tier.encoder.encode(dev.texts), args.tier1_batch_size), pred2, dev.labels, args.metric, num_classes)
        costs = Costs((1.0 / speed[arch]["median"], t2), (args.tier1_batch_size, args.tier2_batch_size))
        choice = analysis.cascade_choice(args.target)
        report = args.work / f"tier1_{arch}_int8" / "quantize.json"
        quantized = json.loads(report.read_text()) if report.exists() else {}  # a given tier may come without one
        rows[arch] = {
            f"dev_{m}_int8": analysis.metric1,
            f"dev_{m}_fp32": quantized.get(f"fp32_dev_{m}"),  # None if it was quantized against another metric
            "size_mb": round((args.work / f"tier1_{arch}_int8" / "openvino_model.bin").stat().st_size / 1e6, 2),
            "throughput_per_s": speed[arch]["median"],
            "throughput_spread": [speed[arch]["min"], speed[arch]["max"]],
            "vs_tier2": speed[arch]["median"] / speed["tier2"]["median"],
            "deferral_at_target": None if choice is None else choice.deferral_rate,
            f"cascade_{m}_at_target": None if choice is None else choice.metric,
            "speedup_at_target": None if choice is None else float(costs.speedup(two_tier_reach(choice.deferral_rate))),
        }
    best = max((a for a in rows if rows[a]["speedup_at_target"] is not None), key=lambda a: rows[a]["speedup_at_target"])
    result = {"metric": m, "target": args.target, f"tier2_dev_{m}_int8": analysis.metric2, "tier2_throughput_per_s": speed["tier2"]["median"], "tier2_spread": [speed["tier2"]["min"], speed["tier2"]["max"]], "rounds": args.rounds, "batch_sizes": {"tier1": args.tier1_batch_size, "tier2": args.tier2_batch_size}, "students": rows, "best": best}
    print(f"tier 2 (INT8): dev {m} {100 * analysis.metric2:.2f}%, {speed['tier2']['median']:.0f} inputs/s")
    print(f"| first tier | dev {m} FP32 | dev {m} INT8 | size MB | inputs/s | vs tier 2 | deferred at {args.target:g} | speedup at {args.target:g} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arch, r in rows.items():
        deferred = "n/a" if r["deferral_at_target"] is None else f"{100 * r['deferral_at_target']:.1f}%"
        gain = "n/a" if r["speedup_at_target"] is None else f"{r['speedup_at_target']:.2f}x"
        fp32 = "n/a" if r[f"dev_{m}_fp32"] is None else f"{100 * r[f'dev_{m}_fp32']:.2f}%"
        print(f"| {arch} | {fp32} | {100 * r[f'dev_{m}_int8']:.2f}% | {r['size_mb']} | {r['throughput_per_s']:.0f} | {r['vs_tier2']:.1f}x | {deferred} | {gain} |")
    print(f"best first tier: {best}")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
