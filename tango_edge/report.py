"""The human-readable calibration report: headline, the paper's Tables 2 and 3, and the N-tier frontier."""

from __future__ import annotations

FRONTIER_ROWS = 12  # rows of the N-tier frontier printed (all of it is in the --json results)


def percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _speedup_cell(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{entry['speedup']:.2f}x ({percent(entry['deferral_rate'])})"


def _sizes_label(results: dict) -> str:
    return "tuned" if results["tuned_profile"] else "default"


def _thresholds(values) -> str:
    return ", ".join("skip" if t > 1.0 else f"{t:.4g}" for t in values)


def format_summary(results: dict) -> list[str]:
    """Headline lines: every tier's metric, measured costs, the temperature decision and the chosen thresholds."""
    m, sized = results["metric"], _sizes_label(results)
    lines = [
        f"{results['instances']} inputs from {results['data']}; metric {m}",
        "alone: " + "    ".join(f"tier {k + 1} {m} {value:.4f}" for k, value in enumerate(results["tier_metrics"])),
        f"batch sizes: {results['batch_sizes_from']}",
    ]
    for name, c in results["costs"].items():
        label = sized if name == "tuned" else "batch 1"
        per_tier = ", ".join(f"tier {k + 1} {1e3 * s:.3f} ms" for k, s in enumerate(c["seconds"]))
        lines.append(f"cost per instance, {label:7} (batch sizes {'/'.join(map(str, c['batch_sizes']))}): {per_tier}")
    t = results["temperature"]
    if t["fitted"] is None:
        lines.append(f"temperature: {t['reason']}")
    else:
        edge = " (edge of the search range)" if t["at_search_edge"] else ""
        verdict = "kept" if t["kept"] else "dropped (T=1)"
        lines.append(
            f"temperature of tier 1: fitted T={t['fitted']:.3f}{edge}, NLL {t['nll_before']:.4f} -> {t['nll_after']:.4f}; deferral at {results['target']:g}: "
            f"{percent(t['deferral_with'])} with, {percent(t['deferral_without'])} without -> {verdict}; {t['reason']}"
        )
        for entry in t.get("per_tier", [])[1:]:
            lines.append(f"temperature of tier {entry['tier']}: fitted T={entry['fitted']:.3f}, NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}")
        if "kept_for_search" in t:
            lines.append(f"temperatures in the {len(results['tiers'])}-tier search: {'fitted' if t['kept_for_search'] else 'all 1 (the fitted ones were no faster)'}")
    c = results["chosen"]
    reach = ", ".join(f"tier {k + 1} {percent(r)}" for k, r in enumerate(c["reach"]))
    lines.append(
        f"chosen: thresholds {_thresholds(c['thresholds'])} (temperatures {', '.join(f'{x:.4g}' for x in c['temperatures'])}); reach {reach}; "
        f"{m} {c['metric']:.4f} (target {c['target']:g} x {results['last_metric']:.4f} = {c['required']:.4f}), speedup {c['speedup']:.2f}x, {c['throughput']:.0f}/s"
    )
    return lines


def _exit_cell(entry: dict | None, key: str) -> str:
    return "n/a" if entry is None else f"{entry[key]:.2f}x (L{entry['mean_exit_layer']:.1f})"


def format_table2(results: dict, costs: str = "tuned") -> list[str]:
    """Table 2: speedup (and deferral rate) of each routing of the first and last tiers at each target, at the
    tuned batch sizes or at batch size 1 (the paper's protocol); with an early-exit model, its column (it runs at
    batch size 1 in both: exits are per input; L = mean exit layer)."""
    table = results["table2" if costs == "tuned" else "table2_batch1"]
    sizes = f"{_sizes_label(results)} batch sizes" if costs == "tuned" else "batch size 1"
    early = results.get("early_exit")
    header = f"{'target':>8} {'random':>18} {'cascade':>18} {'oracle':>18}" + (f" {'DeeBERT (batch 1)':>18}" if early else "")
    lines = [f"Table 2: tier 1 -> tier {len(results['tiers'])}, speedup over the last tier alone (deferral rate) at a share of its {results['metric']}, {sizes}", header]
    for target, row in table.items():
        cells = [_speedup_cell(row[name]) for name in ("random", "cascade", "oracle")]
        if early:
            cells.append(_exit_cell(early["table"].get(target), "speedup_tuned" if costs == "tuned" else "speedup_batch1"))
        lines.append(f"{100 * float(target):7.1f}% " + " ".join(f"{cell:>18}" for cell in cells))
    return lines


def format_early_exit(results: dict) -> list[str]:
    """The early-exit model: each off-ramp's metric alone, its costs, and the real runs that check the prediction
    (DeeBERT's batch-size-1 speedups are over the last tier run one input at a time, as DeeBERT runs)."""
    early = results.get("early_exit")
    if not early:
        return []
    m, timing = results["metric"], early["timing"]
    lines = [
        f"early exit ({early['folder']}, {early['layers']} layers): {m} exiting at layer " + " ".join(f"{k + 1}: {v:.4f}" for k, v in enumerate(early["layer_metrics"])),
        f"cost per instance, one input at a time: all layers {1e3 * sum(timing['stage_seconds']):.3f} ms (layer 1 with tokenization {1e3 * timing['stage_seconds'][0]:.3f} ms), "
        f"the last tier alone {1e3 * timing['last_seconds']['sequential']:.3f} ms (its speedups' reference; "
        f"{1e3 * timing['last_seconds']['batch1']:.3f} ms at batch size 1 on asynchronous requests, {1e3 * timing['last_seconds']['tuned']:.3f} ms tuned)",
    ]
    for target, entry in early["table"].items():
        if entry and "measured_seconds" in entry:
            lines.append(
                f"early exit at {100 * float(target):.1f}%: threshold {entry['threshold']:.4g}, {m} {entry['metric']:.4f}, mean exit layer {entry['mean_exit_layer']:.2f}, "
                f"predicted {entry['speedup_batch1']:.2f}x; run with exits: {entry['measured_speedup_batch1']:.2f}x"
            )
    return lines


def format_table3(results: dict) -> list[str]:
    """Table 3: throughput of the last tier alone and of the two-tier cascade at each target, batch size 1 and tuned."""
    table, tuned = results["table3"], results["costs"]["tuned"]["batch_sizes"]
    header = f"{_sizes_label(results)} ({tuned[0]}/{tuned[-1]})"
    lines = ["Table 3: throughput (instances/s, tokenization included)", f"{'':18} {'batch size 1':>14} {header:>16}"]
    cell = lambda value: "n/a" if value is None else f"{value:.1f}"
    for key in table["tuned"]:
        label = "last tier alone" if key == "last_alone" else f"cascade @ {100 * float(key.split('_')[1]):.1f}%"
        lines.append(f"{label:18} {cell(table['batch1'][key]):>14} {cell(table['tuned'][key]):>16}")
    return lines


def format_search(results: dict) -> list[str]:
    """The N-tier search: chosen point against the best first+last cascade, then the frontier."""
    search = results["search"]
    if search is None:
        return []
    n, m = len(results["tiers"]), results["metric"]
    row = lambda p: f"{_thresholds(p['thresholds']):>22} {' / '.join(percent(r) for r in p['reach']):>26} {p['metric']:8.4f} {p['speedup']:8.2f}x {p['throughput_tuned']:10.0f}"
    lines = [f"{n}-tier search over {search['combinations']} threshold combinations (thresholds, share reaching each tier, {m}, speedup, instances/s)"]
    for label, point in ((f"{n} tiers", search["chosen"]), ("tier 1 + last", search["first_and_last_only"])):
        lines.append(f"{label:14} " + ("none reaches the target" if point is None else row(point)))
    if search["chosen"] and search["first_and_last_only"]:
        lines.append(f"the {n}-tier cascade is {search['chosen']['speedup'] / search['first_and_last_only']['speedup']:.2f}x the speed of the best tier 1 + last cascade at the target")
    points = search["frontier"]
    step = max(1, len(points) // FRONTIER_ROWS)
    lines.append(f"frontier ({len(points)} points, every {step}th shown):")
    lines.extend(f"{'':14} {row(p)}" for p in points[::step])
    return lines


def format_report(results: dict) -> str:
    """The report: summary, Table 2 (tuned and batch size 1), Table 3, the early-exit model if given, and for
    three or more tiers the search."""
    parts = [*format_summary(results), "", *format_table2(results), "", *format_table2(results, "batch1"), "", *format_table3(results)]
    early = format_early_exit(results)
    parts += [""] + early if early else []
    search = format_search(results)
    return "\n".join(parts + ([""] + search if search else []))
