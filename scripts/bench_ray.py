#!/usr/bin/env python
"""The local run against Ray Data on the same file, measured side by side in one run.

Candidates, each timed once per round in a shuffled order (medians over rounds; this VM's speed swings 2-10x):
- `local`: what `tango-edge run --input FILE` does: load the cascade, stream the file's lines through it.
- `ray-N`: `tango-edge run --input FILE --ray --actors N` on a local Ray instance (started once, before the
  rounds): N actors sharing the machine's cores, each loading the cascade, reading its own share of the file.
Each pass is timed end to end (models loaded, actors started, every answer back in input order) and from its
first answer to its last (the steady rate). Ray's cost per line is the paired difference of a round's ray-1 and
local seconds, over the lines. Every Ray pass's answers are compared with the local pass's of the same round, and each local pass with the
previous round's (a later tier's batches are made of whichever deferred inputs are waiting, so their padding,
and the scores, can differ between any two runs).

Example:
    python scripts/bench_ray.py --models models/sst2 --data ../shared/data/sst2/train.tsv --lines 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tango_edge import Cascade  # noqa: E402
from tango_edge.data import line_text, read_tsv  # noqa: E402
from tango_edge.ray import ActorPlan, predict_file  # noqa: E402
from tango_edge.ray.pool import connect  # noqa: E402
from tango_edge.timing import measure_rounds, summarize  # noqa: E402


def write_corpus(data: str, lines: int, path: Path) -> Path:
    """`lines` texts cycled from a TSV's sentences (or a text file's lines), one per line."""
    texts = read_tsv(data).texts if data.endswith(".tsv") else Path(data).read_text(encoding="utf-8").splitlines()
    texts = [t if isinstance(t, str) else "\t".join(t) for t in texts if t]
    path.write_text("\n".join((texts * (lines // len(texts) + 1))[:lines]) + "\n", encoding="utf-8")
    return path


def timed(answers) -> tuple[list[str], float, float]:
    """(JSON lines, seconds end to end, seconds from the first answer to the last)."""
    started = time.perf_counter()
    out, first = [], None
    for prediction in answers():
        if first is None:
            first = time.perf_counter()
        out.append(json.dumps(prediction.to_dict()))
    end = time.perf_counter()
    return out, end - started, end - (first or end)


def local_answers(models: Path, corpus: Path):
    def run():
        with Cascade.from_dir(models) as cascade, corpus.open("rb") as handle:
            yield from cascade.predict_iter(line_text(raw) for raw in handle)

    return run


def ray_answers(models: Path, corpus: Path, actors: int, cpus: int):
    return lambda: predict_file(corpus, models, plan=ActorPlan(actors, max(1, cpus // actors)))


def compare(got: list[str], want: list[str]) -> dict:
    differ = [(json.loads(g), json.loads(w)) for g, w in zip(got, want) if g != w]
    decision = sum((g["label"], g["tier"], g.get("error")) != (w["label"], w["tier"], w.get("error")) for g, w in differ)
    score = max((abs(g["score"] - w["score"]) for g, w in differ if g["score"] is not None and w["score"] is not None), default=0.0)
    return {"lines": len(got), "same_count": len(got) == len(want), "lines_differing": len(differ), "label_tier_or_error_differing": decision, "max_score_difference": score}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/sst2"))
    p.add_argument("--data", required=True, help="TSV with a sentence column, or a text file")
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--actors", default="1,2", help="Ray pool sizes to time, comma-separated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(args.data, args.lines, Path(tmp) / "corpus.txt")
        started = time.perf_counter()
        connect()
        ray_start = time.perf_counter() - started
        print(f"{args.lines} lines, {cpus} CPUs; Ray started in {ray_start:.1f} s (once, not in the timings)", file=sys.stderr)
        runs = {"local": local_answers(args.models, corpus)}
        for actors in (int(a) for a in args.actors.split(",")):
            runs[f"ray-{actors}"] = ray_answers(args.models, corpus, actors, cpus)
        passes: dict[str, list[dict]] = {name: [] for name in runs}
        outputs: dict[str, list[str]] = {}

        def timed_pass(name: str) -> float:
            out, seconds, steady = timed(runs[name])
            outputs[name] = out
            passes[name].append({"seconds": seconds, "steady_seconds": steady})
            print(f"  {name}: {len(out) / seconds:.0f} lines/s end to end, {len(out) / max(steady, 1e-9):.0f}/s steady", file=sys.stderr)
            return len(out) / seconds

        comparisons: dict[str, list[dict]] = {name: [] for name in runs if name != "local"}

        local_rounds: list[list[str]] = []  # local against local: how far two local runs of the same file differ
        local_against_local: list[dict] = []

        def after_round(index: int, rounds: int) -> None:
            for name in comparisons:
                comparisons[name].append(compare(outputs[name], outputs["local"]))
            if local_rounds:
                local_against_local.append(compare(outputs["local"], local_rounds[-1]))
            local_rounds.append(outputs["local"])
            print(f"round {index}/{rounds} done", file=sys.stderr)

        rates = measure_rounds(list(runs), timed_pass, args.rounds, progress=after_round)

    results = {"lines": args.lines, "cpus": cpus, "rounds": args.rounds, "ray_start_seconds": round(ray_start, 2), "runs": {}}
    local_rate = summarize(rates["local"])["median"]
    print(f"\n{'run':<8} {'lines/s (median)':>17} {'x local':>8} {'steady/s':>9} {'spread min-max':>15}")
    for name in runs:
        summary = summarize(rates[name])
        steady = statistics.median(args.lines / max(p["steady_seconds"], 1e-9) for p in passes[name])
        results["runs"][name] = {"lines_per_s": summary, "steady_lines_per_s": steady, "x_local": summary["median"] / local_rate, "passes": passes[name]}
        if name in comparisons:
            results["runs"][name]["against_local"] = comparisons[name]
        print(f"{name:<8} {summary['median']:>17.0f} {summary['median'] / local_rate:>7.2f}x {steady:>9.0f} {summary['min']:>7.0f}-{summary['max']:.0f}")
    results["local_against_local"] = local_against_local
    if "ray-1" in passes:
        per_line = [(r["seconds"] - l["seconds"]) / args.lines * 1e6 for r, l in zip(passes["ray-1"], passes["local"])]
        results["ray_1_overhead_us_per_line"] = statistics.median(per_line)
        print(f"Ray's cost per line (ray-1 minus local, paired by round, median): {statistics.median(per_line):.1f} us")
    for name, rows in [*comparisons.items(), ("local (another round)", local_against_local)]:
        if not rows:
            continue
        worst = max(rows, key=lambda r: (r["label_tier_or_error_differing"], r["lines_differing"]))
        print(f"{name} against local: {worst['lines_differing']} of {worst['lines']} lines differ in the worst round "
              f"({worst['label_tier_or_error_differing']} in label, tier or error; largest score difference {worst['max_score_difference']:.2g})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
