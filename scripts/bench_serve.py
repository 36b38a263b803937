#!/usr/bin/env python
"""Load test of `tango-edge serve` on 127.0.0.1 against what a user would write instead, in one run.

Three servers, each a subprocess on a free localhost port, get the same closed-loop load: c client threads (c =
1, 8, 64), each with its own keep-alive connection, sending one request and waiting for its answer before the
next, with single-sentence or 32-sentence requests of SST-2 dev sentences. Every level is bounded by a request
count and a time cap; levels and servers are interleaved in rounds (shuffled order) and reported as medians.

- cascade: `tango-edge serve` on the cascade folder;
- last tier only: the same server with every tier but the last skipped (thresholds above 1);
- optimum-intel: a FastAPI app wrapping optimum-intel's `OVModelForSequenceClassification` in a transformers
  pipeline on the same last-tier INT8 IR (a sync endpoint in FastAPI's thread pool, the pipeline behind a lock:
  its one OpenVINO infer request fails when two threads call it at once).

In-process `Cascade.predict()` on the same sentences is timed in the same rounds, for the server's overhead.

Example:
    python scripts/bench_serve.py --models models/sst2 --data ../shared/data/sst2/dev.tsv --rounds 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tango_edge import Cascade  # noqa: E402
from tango_edge.config import CascadeConfig  # noqa: E402
from tango_edge.data import read_tsv  # noqa: E402
from tango_edge.routing import SKIP_THRESHOLD  # noqa: E402
from tango_edge.serve.launch import ServerProcess  # noqa: E402
from tango_edge.timing import closed_loop  # noqa: E402



def peer_app(model_dir: str):
    """The optimum-intel server a user would write: one pipeline, TEI's request and answer shapes."""
    import transformers
    from fastapi import FastAPI
    from optimum.intel import OVModelForSequenceClassification

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    pipe = transformers.pipeline("text-classification", model=OVModelForSequenceClassification.from_pretrained(model_dir), tokenizer=tokenizer, top_k=None)
    app = FastAPI()
    import threading

    lock = threading.Lock()  # one OpenVINO infer request behind the pipeline: concurrent calls fail ("busy") without it

    @app.post("/predict")
    def predict(body: dict):
        inputs = body["inputs"]
        texts = [inputs] if isinstance(inputs, str) else [item[0] for item in inputs]
        with lock:
            out = pipe(texts, batch_size=len(texts), truncation=True)
        return out[0] if isinstance(inputs, str) else out

    return app


def http_clients(port: int, payloads: list[bytes], clients: int, requests: int, max_seconds: float) -> dict:
    """`clients` threads on keep-alive connections posting `payloads` in turn (timing.closed_loop)."""

    def make_sender():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def send(k: int) -> None:
            connection.request("POST", "/predict", payloads[k % len(payloads)], {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"status {response.status}")

        return send

    result = closed_loop(clients, requests, max_seconds, make_sender)
    return {**result, "requests_per_s": result.pop("per_s")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--data", default="../shared/data/sst2/dev.tsv")
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--sizes", default="1,32", help="sentences per request")
    p.add_argument("--requests", type=int, default=400, help="requests per level and round (at most)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="time cap per level and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peer", default=None, help=argparse.SUPPRESS)  # internal: run the optimum-intel server on this model folder
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.peer:
        import uvicorn

        uvicorn.run(peer_app(args.peer), host="127.0.0.1", port=0, log_level="info", access_log=False)
        return

    texts = read_tsv(args.data).texts
    config = CascadeConfig.load(args.models)
    last_dir = str(args.models / config.tiers[-1].dir)
    skip = ",".join(str(SKIP_THRESHOLD) for _ in config.tiers[:-1])
    serve = [sys.executable, "-m", "tango_edge.cli", "serve", "--models", str(args.models), "--port", "0", "--max-client-batch-size", "64"]
    servers = {"cascade": ServerProcess(serve), "last tier only": ServerProcess(serve + ["--thresholds", skip]), "optimum-intel": ServerProcess([sys.executable, __file__, "--peer", last_dir])}
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    rng = random.Random(0)
    payloads, batch_texts = {}, {}
    for size in sizes:
        order = list(texts)
        rng.shuffle(order)
        groups = [order[i : i + size] for i in range(0, len(order) - size + 1, size)]
        payloads[size] = [json.dumps({"inputs": g[0]} if size == 1 else {"inputs": [[t] for t in g]}).encode() for g in groups]
        batch_texts[size] = [t for g in (groups * (args.requests // len(groups) + 1))[: args.requests] for t in g]  # what one level sends
    in_process = Cascade.from_dir(args.models)

    runs = {}
    for name, server in servers.items():
        for size in sizes:
            for clients in levels:
                runs[(name, size, clients)] = (lambda port=server.port, size=size, clients=clients: http_clients(port, payloads[size], clients, args.requests, args.max_seconds))
    for size in sizes:
        def predict(size=size):
            started = time.perf_counter()
            in_process.predict(batch_texts[size])
            return {"requests_per_s": len(batch_texts[size]) / size / (time.perf_counter() - started)}

        runs[("in-process predict()", size, 0)] = predict
    for server in servers.values():  # warm-up
        http_clients(server.port, payloads[sizes[0]], 4, 50, 10.0)
    in_process.predict(batch_texts[sizes[0]][:256])
    results = {key: [] for key in runs}
    try:
        for r in range(args.rounds):
            order = list(runs)
            rng.shuffle(order)
            for key in order:
                results[key].append(runs[key]())
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
        in_process.close()

    median = lambda key, field: statistics.median(x[field] for x in results[key])
    rows = []
    print(f"\n{len(texts)} SST-2 dev sentences; {args.rounds} interleaved rounds; at most {args.requests} requests or {args.max_seconds:g} s per level and round; medians")
    print("| server | sentences/request | clients | requests/s | sentences/s | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, size, clients) in runs:
        if clients == 0:
            continue
        row = {"server": name, "size": size, "clients": clients, **{f: median((name, size, clients), f) for f in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")}}
        row["sentences_per_s"] = row["requests_per_s"] * size
        rows.append(row)
        print(f"| {name} | {size} | {clients} | {row['requests_per_s']:.1f} | {row['sentences_per_s']:.0f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} |")
    print()
    by = {(r["server"], r["size"], r["clients"]): r for r in rows}
    summary = {}
    for size in sizes:
        for clients in levels:
            ratio = by[("cascade", size, clients)]["sentences_per_s"] / by[("optimum-intel", size, clients)]["sentences_per_s"]
            summary[f"cascade_over_optimum_{size}x{clients}"] = ratio
            print(f"{size} sentence(s)/request, {clients} clients: cascade server {ratio:.2f}x the optimum-intel server, {by[('cascade', size, clients)]['sentences_per_s'] / by[('last tier only', size, clients)]['sentences_per_s']:.2f}x itself with the last tier only")
        in_proc = median(("in-process predict()", size, 0), "requests_per_s") * size
        best = max(by[("cascade", size, c)]["sentences_per_s"] for c in levels)
        summary[f"server_over_predict_{size}"] = best / in_proc
        print(f"{size} sentence(s)/request: the cascade server's best level reaches {best / in_proc:.2f}x in-process predict() ({in_proc:.0f} sentences/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary, "rounds": {f"{k[0]}|{k[1]}|{k[2]}": v for k, v in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
