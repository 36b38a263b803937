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


def format_table2(results: dict) -> list[str]:
    """Table 2: speedup (and deferral rate) of each routing of the first and last tiers at each target."""
    lines = [
        f"Table 2: tier 1 -> tier {len(results['tiers'])}, speedup over the last tier alone (deferral rate) at a share of its {results['metric']}, {_sizes_label(results)} batch sizes",
        f"{'target':>8} {'random':>18} {'cascade':>18} {'oracle':>18}",
    ]
    for target, row in results["table2"].items():
        lines.append(f"{100 * float(target):7.1f}% {_speedup_cell(row['random']):>18} {_speedup_cell(row['cascade']):>18} {_speedup_cell(row['oracle']):>18}")
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
    """The report: summary, Tables 2 and 3, and for three or more tiers the search."""
    parts = [*format_summary(results), "", *format_table2(results), "", *format_table3(results)]
    search = format_search(results)
    return "\n".join(parts + ([""] + search if search else []))
