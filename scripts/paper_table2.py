#!/usr/bin/env python
"""The paper's Table 2 across tasks: one markdown table from `tango-edge calibrate --early-exit ... --json` files.

Per task and target (99% and 98% of the last tier's metric): the speedup over the last tier alone of random
routing, the cascade and the oracle at batch size 1 (the paper's protocol) and at the tuned batch sizes, DeeBERT's
at batch size 1 (predicted from its per-layer costs, and measured with real exits where calibrate ran it), and
the paper's own TangoBERT and DeeBERT figures at 99% and batch size 1 beside them; and, as the paper's Table 3,
the cascade's throughput at batch size 1 and at the tuned batch sizes. The cascade columns are its first and
last tiers (the paper's two-tier design); a file from a cascade of three or more tiers adds what all of them
reach together at calibrate's target.

Example:
    python scripts/paper_table2.py SST-2=docs/deebert/sst2_calibrate.json MRPC=docs/deebert/mrpc_calibrate.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# TangoBERT (Mamou et al. 2022), Table 2: speedup at 99% of the last tier's metric, batch size 1.
PAPER_AT_99 = {"SST-2": {"cascade": 4.3, "deebert": 1.4}, "MRPC": {"cascade": 2.0, "deebert": 1.2}, "CoLA": {"cascade": 1.5, "deebert": 1.3}}


def speedup(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{entry['speedup']:.2f}x"


def early_exit_cell(results: dict, target: str) -> str:
    entry = (results.get("early_exit") or {}).get("table", {}).get(target)
    if entry is None:
        return "n/a"
    measured = f" ({entry['measured_speedup_batch1']:.2f}x run)" if "measured_speedup_batch1" in entry else ""
    return f"{entry['speedup_batch1']:.2f}x{measured}"


def throughput_cell(results: dict, target: str) -> str:
    batch1, tuned = (results["table3"][costs].get(f"cascade_{target}") for costs in ("batch1", "tuned"))
    return "n/a" if not batch1 or not tuned else f"{batch1:.0f} -> {tuned:.0f}/s ({tuned / batch1:.2f}x)"


def all_tiers_cell(results: dict, target: str) -> str:
    """A cascade of three or more tiers (calibrate's search, at its own target only): its speedup over the last
    tier alone at batch size 1 and at the tuned batch sizes. The paper's cascades have two tiers."""
    chosen = (results.get("search") or {}).get("chosen")
    if len(results.get("tiers", [])) < 3 or not chosen or target != f"{results['target']:g}":
        return ""
    alone = results["table3"]
    return f"{chosen['throughput_batch1'] / alone['batch1']['last_alone']:.2f}x / {chosen['throughput_tuned'] / alone['tuned']['last_alone']:.2f}x"


def rows(task: str, results: dict) -> list[str]:
    out = []
    for target in results["table2_batch1"]:
        batch1, tuned = results["table2_batch1"][target], results["table2"][target]
        paper = PAPER_AT_99.get(task, {}) if target == "0.99" else {}
        cells = [
            task,
            f"{results['metric']} {100 * results['last_metric']:.2f}",
            f"{100 * float(target):g}%",
            speedup(batch1["random"]),
            f"**{speedup(batch1['cascade'])}**",
            speedup(batch1["oracle"]),
            early_exit_cell(results, target),
            speedup(tuned["cascade"]),
            throughput_cell(results, target),
            all_tiers_cell(results, target),
            f"{paper['cascade']}x / {paper['deebert']}x" if paper else "",
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def table(named: list[tuple[str, dict]]) -> str:
    lines = [
        "| task | last tier | target | random | cascade | oracle | DeeBERT | cascade, tuned batches | cascade throughput, batch 1 -> tuned | all tiers (3+), batch 1 / tuned | paper: cascade / DeeBERT |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, results in named:
        lines += rows(task, results)
    return "\n".join(lines)


def parse_named(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TASK=calibrate.json, e.g. SST-2=docs/deebert/sst2_calibrate.json")
    return name, Path(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=parse_named, metavar="TASK=JSON", help="a task's name and its calibrate --json output")
    args = p.parse_args(argv)
    named = []
    for task, path in args.results:
        try:
            named.append((task, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            p.error(f"{path}: {exc}")
    print("Speedup over the last tier alone at a share of its metric; batch size 1 unless said (DeeBERT always runs one input at a time).")
    print(table(named))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
