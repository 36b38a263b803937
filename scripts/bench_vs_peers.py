#!/usr/bin/env python
"""tango-edge against what a user would pick instead, on the same inputs (sentences, or pairs), in one run.

(a) a transformers PyTorch fp32 text-classification pipeline on the last tier's checkpoint (without one, on
    its architecture with random weights, built from the IR folder's config.json: timed, its score not shown);
(b) optimum-intel OVModelForSequenceClassification in a transformers pipeline on the second tier's INT8 IR,
    as a user would run it (pipeline default batch size 1) and batched (--peer-batch-size);
(c) the second tier alone in tango-edge's runtime at its tuned batch size, and at half and double it: the
    ratio d/c is taken against the fastest of these in this run, so a noisy tuning cannot flatter the cascade;
(d) the cascade at its calibrated threshold.
Each system is scored by the task's metric (cascade.json's: accuracy, f1 or mcc). Systems are interleaved in
rounds (shuffled order) and summarised by medians with their spread: this VM's
speed swings 2-10x within minutes, so only figures from one run are compared. In each round a system gets the
sentences repeated into one input stream of at least --min-seconds at its warm-up speed (one pass of the cascade
over SST-2 dev takes well under a second, too short to time against the VM's hiccups), as `tango-edge run`
reads a file. The cascade is also timed on separate calls of one pass each, to show what short calls cost it
(in each, tier 2 waits for enough deferred inputs and finishes the call's last batch alone).

Example:
    python scripts/bench_vs_peers.py --models models/sst2 --torch-model build/sst2/tier2_torch/best \\
        --data ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _common
import sequence_classifier
from _common import log

from tango_edge import Cascade
from tango_edge.data import read_tsv
from tango_edge.metrics import metric_fn
from tango_edge.routing import SKIP_THRESHOLD


def pipeline_runner(pipe, batch_size: int, label2id: dict):
    def run(texts):
        # A pair task's inputs are (first, second) tuples: the pipeline takes them as text and text_pair.
        inputs = [{"text": t[0], "text_pair": t[1]} if isinstance(t, tuple) else t for t in texts]
        out = pipe(inputs, batch_size=batch_size, truncation=True)
        return [label2id[o["label"]] for o in out]

    return run


def cascade_runner(cascade: Cascade, label2id: dict, call_size: int | None = None):
    """Answers for a stream of texts: one `predict_iter` over all of them, or one call per `call_size` texts."""

    def run(texts):
        calls = [texts] if call_size is None else [texts[i : i + call_size] for i in range(0, len(texts), call_size)]
        return [label2id[p.label] for call in calls for p in cascade.predict_iter(call)]

    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--torch-model", default="build/sst2/tier2_torch/best", help="the last tier's transformers checkpoint (scripts/train_tier2.py writes it; if missing, its architecture with random weights is timed)")
    p.add_argument("--data", default="../shared/data/sst2/dev.tsv")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peer-batch-size", type=int, default=None, help="batch size for the batched peer pipelines (default: tango-edge's tuned tier-2 size)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="aimed length of each system's timed stream per round (whole passes over the data)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    _common.setup_logging()
    torch = _common.require("torch")
    transformers = _common.require("transformers")
    intel = _common.require("optimum.intel")
    torch.set_num_threads(_common.cpu_threads())

    cascade = Cascade.from_dir(args.models)
    data = read_tsv(args.data, cascade.config.text_columns, cascade.config.label_column)  # the task's own columns
    texts, gold = data.texts, np.asarray(data.labels)
    score_of = metric_fn(cascade.config.metric)
    last_only = [SKIP_THRESHOLD] * (len(cascade.tiers) - 1)  # every tier before the last skipped
    tier2_alone = Cascade.from_dir(args.models, thresholds=last_only)
    label2id = {name: i for i, name in enumerate(cascade.labels)}
    peer_batch = args.peer_batch_size or cascade.config.batch_sizes[-1]
    last_dir = args.models / cascade.config.tiers[-1].dir
    tokenizer = transformers.AutoTokenizer.from_pretrained(last_dir)
    ov_model = intel.OVModelForSequenceClassification.from_pretrained(last_dir)
    ov_pipe = transformers.pipeline("text-classification", model=ov_model, tokenizer=tokenizer)
    systems = {}
    untrained = set()  # systems timed on random weights: their speed counts, their score does not
    if not args.skip_torch:
        random_weights = not Path(args.torch_model).exists()
        if not random_weights:
            pt_model = sequence_classifier.load(args.torch_model, dtype=torch.float32).eval()
            pt_tokenizer = transformers.AutoTokenizer.from_pretrained(args.torch_model)
        else:
            # Speed does not depend on the weights: the last tier's own config.json gives the architecture.
            log.info("%s not found: timing the PyTorch pipeline on %s's architecture with random weights (no score)", args.torch_model, last_dir)
            pt_model = transformers.AutoModelForSequenceClassification.from_config(transformers.AutoConfig.from_pretrained(last_dir)).eval()
            pt_tokenizer = tokenizer
        pt_pipe = transformers.pipeline("text-classification", model=pt_model, tokenizer=pt_tokenizer, device="cpu")
        for size in (1, peer_batch):
            systems[f"(a) PyTorch fp32 pipeline, batch {size}"] = pipeline_runner(pt_pipe, size, label2id)
        untrained = {name for name in systems if random_weights}
    systems["(b) optimum-intel INT8 pipeline, batch 1"] = pipeline_runner(ov_pipe, 1, label2id)
    systems[f"(b) optimum-intel INT8 pipeline, batch {peer_batch}"] = pipeline_runner(ov_pipe, peer_batch, label2id)
    tuned = tier2_alone.config.batch_sizes[-1]
    alone = {tuned: tier2_alone}
    for size in (tuned // 2, tuned * 2):
        if size >= 1:
            alone[size] = Cascade.from_dir(args.models, thresholds=last_only, batch_sizes=[*tier2_alone.config.batch_sizes[:-1], size])
    for size in sorted(alone):
        systems[f"(c) tango-edge tier 2 alone, batch {size}{' (tuned)' if size == tuned else ''}"] = cascade_runner(alone[size], label2id)
    systems[f"(d) tango-edge cascade, thresholds {', '.join(f'{t:.4g}' for t in cascade.config.thresholds)}"] = cascade_runner(cascade, label2id)
    systems[f"(d) same, in separate calls of {len(texts)}"] = cascade_runner(cascade, label2id, call_size=len(texts))

    repeats = {}
    for name, run in systems.items():  # warm-up, and each system's stream length
        run(texts[:64])
        started = time.perf_counter()
        run(texts)
        rate = len(texts) / (time.perf_counter() - started)
        repeats[name] = max(1, math.ceil(args.min_seconds * rate / len(texts)))
    speeds = {name: [] for name in systems}
    scores = {}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = list(systems)
        rng.shuffle(order)
        for name in order:
            stream = texts * repeats[name]
            started = time.perf_counter()
            predictions = systems[name](stream)
            speeds[name].append(len(stream) / (time.perf_counter() - started))
            scores[name] = score_of(np.tile(gold, repeats[name]), np.asarray(predictions), len(cascade.labels))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    cascade_stats = cascade.stats()
    cascade.close()
    for engine in alone.values():
        engine.close()

    median = {n: statistics.median(v) for n, v in speeds.items()}
    d = next(n for n in systems if n.startswith("(d)"))
    print(f"\n{len(texts)} inputs of {args.data}, {args.rounds} interleaved rounds; each system reads them repeated into a stream of about {args.min_seconds:g} s; medians (min-max)\n")
    metric = cascade.config.metric
    print(f"| system | stream | inputs/s | spread | {metric} | (d) speedup |\n|---|---:|---:|---:|---:|---:|")
    rows = []
    for name in systems:
        ratio = median[d] / median[name]
        score = None if name in untrained else scores[name]
        rows.append({"system": name, "stream_sentences": len(texts) * repeats[name], "median_per_s": median[name], "min_per_s": min(speeds[name]), "max_per_s": max(speeds[name]), metric: score, "cascade_speedup": ratio, "rates_per_s": speeds[name]})
        shown = "n/a (random weights)" if score is None else f"{100 * score:.2f}%"
        print(f"| {name} | {len(texts) * repeats[name]} | {median[name]:.1f} | {min(speeds[name]):.0f}-{max(speeds[name]):.0f} | {shown} | {ratio:.2f}x |")
    best_alone = max((n for n in systems if n.startswith("(c)")), key=lambda n: median[n])
    print(f"\ncascade deferral rate over the run: {100 * cascade_stats['deferral_rate']:.1f}%")
    calls = next(n for n in systems if n.startswith("(d) same"))
    paired = sorted(a / b for a, b in zip(speeds[d], speeds[best_alone]))  # same round: the same spell of the VM
    print(f"(d) over that (c) round by round: median {statistics.median(paired):.2f}x, range {paired[0]:.2f}-{paired[-1]:.2f}x")
    print(f"(d) over the fastest (c), {best_alone[len('(c) tango-edge '):]}: {median[d] / median[best_alone]:.2f}x (in separate calls of {len(texts)}: {median[calls] / median[best_alone]:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "metric": metric, "rounds": args.rounds, "min_seconds": args.min_seconds, "rows": rows, "cascade_over_best_tier2_alone": median[d] / median[best_alone], "cascade_calls_over_best_tier2_alone": median[calls] / median[best_alone], "cascade_over_best_tier2_alone_by_round": paired}, indent=2))


if __name__ == "__main__":
    main()
