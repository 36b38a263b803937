#!/usr/bin/env python
"""Online requests against the in-process cascade: closed-loop client threads, measured side by side in one run.

Each concurrency level c runs c client threads; each sends one sentence at a time with `Cascade.submit` and
waits for its answer before sending the next (a closed loop), cycling through the data. The same levels also
run as c coroutines on one asyncio event loop awaiting `Cascade.predict_async`, the way an HTTP server calls
the cascade. Every level, and
`predict()` over the same number of sentences, is timed once per round in a shuffled order; medians over the
rounds are reported. Loops are bounded by a request count and a time cap. Besides throughput and latency
percentiles, the run reports the later tiers' median batch time, so the p99 at each level can be compared with
`max_wait_ms` plus two later-tier batch times (a deferred request waits for its first-tier batch, then for its
second-tier batch: at most max_wait_ms each, plus the batches running before and with it).

Example:
    python scripts/bench_online.py --models models/sst2 --data ../shared/data/sst2/dev.tsv --concurrency 1,8,64
"""

from __future__ import annotations

import argparse
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
from tango_edge.timing import closed_loop  # noqa: E402


def threaded_clients(cascade: Cascade, texts: list, clients: int, requests: int, max_seconds: float) -> dict:
    """`clients` threads sending one sentence at a time with `Cascade.submit` (timing.closed_loop)."""

    def make_sender():
        def send(k: int) -> None:
            answer = cascade.submit(texts[k % len(texts)]).result(timeout=60)
            if answer.error is not None:
                raise RuntimeError(answer.error)

        return send

    return closed_loop(clients, requests, max_seconds, make_sender)


def asyncio_clients(cascade: Cascade, texts: list, clients: int, requests: int, max_seconds: float) -> dict:
    """The same closed loop as `threaded_clients`, with `clients` coroutines on one asyncio event loop (as an HTTP
    server runs them) awaiting `Cascade.predict_async` instead of threads blocking on futures."""
    import asyncio

    latencies: list[float] = []
    next_request = [0]

    async def client(give_up: float):
        while time.perf_counter() < give_up and next_request[0] < requests:
            k = next_request[0]
            next_request[0] += 1
            sent = time.perf_counter()
            (answer,) = await cascade.predict_async([texts[k % len(texts)]])
            latencies.append(time.perf_counter() - sent)
            if answer.error is not None:
                raise RuntimeError(answer.error)

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(started + max_seconds) for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    ms = np.asarray(latencies) * 1e3
    return {"requests": len(latencies), "per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--data", default="../shared/data/sst2/dev.tsv")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--requests", type=int, default=2000, help="requests per level and round (at most)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="time cap per level and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-wait-ms", type=float, default=None, help="override cascade.json's max_wait_ms")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    texts = read_tsv(args.data).texts if args.data.endswith(".tsv") else [t for t in Path(args.data).read_text(encoding="utf-8").splitlines() if t.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    cascade = Cascade.from_dir(args.models, max_wait_ms=args.max_wait_ms)
    if cascade.profile_note:
        print(f"note: {cascade.profile_note}", file=sys.stderr)
    batch_stream = (texts * (args.requests // len(texts) + 1))[: args.requests]
    list(cascade.predict_iter(batch_stream[:256]))  # warm-up
    threaded_clients(cascade, texts, 8, 200, 10.0)

    def timed_predict() -> dict:
        started = time.perf_counter()
        cascade.predict(batch_stream)
        return {"requests": len(batch_stream), "per_s": len(batch_stream) / (time.perf_counter() - started)}

    runs = {f"threads {c}": (lambda c=c: threaded_clients(cascade, texts, c, args.requests, args.max_seconds)) for c in levels}
    runs.update({f"asyncio {c}": (lambda c=c: asyncio_clients(cascade, texts, c, args.requests, args.max_seconds)) for c in levels})
    runs["predict()"] = timed_predict
    results = {name: [] for name in runs}
    cascade.reset_stats()
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(runs)
        rng.shuffle(order)
        for name in order:
            results[name].append(runs[name]())
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {results[n][-1]['per_s']:.0f}/s" for n in runs), file=sys.stderr)
    stats = cascade.stats()
    cascade.close()

    later_batch_ms = [t["batch_time_ms"].get("p50_ms", 0.0) for t in stats["tiers"][1:] if t["batches"]]
    bound = cascade.config.max_wait_ms + 2 * max(later_batch_ms, default=0.0)
    predict_rate = statistics.median(x["per_s"] for x in results["predict()"])
    rows = []
    print(f"\n{len(texts)} sentences of {args.data}; {args.rounds} rounds; max_wait_ms {cascade.config.max_wait_ms:g}; batch sizes {cascade.config.batch_sizes}")
    print(f"| clients | requests/s | vs predict() | p50 ms | p99 ms | p99 within bound |\n|---|---:|---:|---:|---:|---|")
    for name in runs:
        if name == "predict()":
            continue
        rate = statistics.median(x["per_s"] for x in results[name])
        p50 = statistics.median(x["p50_ms"] for x in results[name])
        p99 = statistics.median(x["p99_ms"] for x in results[name])
        rows.append({"level": name, "per_s": rate, "vs_predict": rate / predict_rate, "p50_ms": p50, "p99_ms": p99, "rounds": results[name]})
        print(f"| {name} | {rate:.0f} | {rate / predict_rate:.2f}x | {p50:.1f} | {p99:.1f} | {'yes' if p99 <= bound else 'no'} |")
    print(f"| predict() | {predict_rate:.0f} | 1.00x | | | |")
    print(f"\nbound: max_wait_ms {cascade.config.max_wait_ms:g} + 2 x later-tier batch time (median {max(later_batch_ms, default=0.0):.1f} ms) = {bound:.1f} ms; tier batch sizes over the run: " + ", ".join(f"tier {t['tier']} mean {t['mean_batch_size']:.1f}" for t in stats["tiers"] if t["batches"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"levels": rows, "predict_per_s": predict_rate, "bound_ms": bound, "later_batch_ms": later_batch_ms, "stats": stats}, indent=2))


if __name__ == "__main__":
    main()
