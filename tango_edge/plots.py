"""The paper's figures from `tango-edge calibrate` results (PNG, matplotlib imported only when asked for).

Figures are drawn on `matplotlib.figure.Figure` objects, not through pyplot, so no global backend or figure
registry is touched: safe inside other programs and in tests.
"""

from __future__ import annotations

from pathlib import Path

from .errors import TangoEdgeError

FIGURES = ("metric_vs_speedup.png", "throughput_vs_metric.png", "fixes_by_confidence_decile.png")


def require_matplotlib():
    """The matplotlib module, or a TangoEdgeError saying how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # noqa: F401 - checks the part we use is importable
    except ImportError:
        raise TangoEdgeError("--plots needs matplotlib: pip install matplotlib (or pip install 'tango-edge[plots]')") from None
    return matplotlib


def _figure(width: float = 6.0, height: float = 4.2):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.add_subplot()


def metric_vs_speedup(results: dict, path: Path) -> Path:
    """Fig. 2: the task metric against the speedup over the last tier alone, for random, cascade and oracle
    routing, and DeeBERT's early exit when calibrate was given one."""
    sweep, metric = results["sweep"], results["metric"]
    speedups = [row["speedup"] for row in sweep]
    figure, axes = _figure()
    for key, label, style in (("random_metric", "random", ":"), ("metric", "cascade (confidence)", "-"), ("oracle_metric", "oracle", "--")):
        axes.plot(speedups, [row[key] for row in sweep], style, label=label)
    search = results.get("search")
    if search:
        points = search["frontier"]
        axes.plot([p["speedup"] for p in points], [p["metric"] for p in points], "-.", label=f"{len(results['tiers'])}-tier cascade (frontier)")
    early = results.get("early_exit")
    if early:  # at batch size 1 (exits are per input), against the last tier alone at batch size 1, as the paper
        last_batch1 = results["costs"]["batch1"]["seconds"][-1]
        axes.plot([row["throughput_batch1"] * last_batch1 for row in sweep], [row["metric"] for row in sweep], "-", linewidth=0.8, label="cascade, batch size 1")
        floor = min(row["metric"] for row in sweep)  # DeeBERT's earliest exits fall far below the first tier: not drawn
        shown = [row for row in early["sweep"] if row["metric"] >= floor]
        axes.plot([row["speedup_batch1"] for row in shown], [row["metric"] for row in shown], "-", marker=".", markersize=2, label="DeeBERT early exit, one input at a time")
        axes.set_xscale("log")  # DeeBERT lives near 1x, the cascade's curves reach far beyond
    for target in (0.99, 0.98):
        axes.axhline(target * results["last_metric"], color="grey", linewidth=0.6)
    axes.set_xlabel("speedup over the last tier alone, run the same way" if early else "speedup over the last tier alone (tuned batch sizes)")
    axes.set_ylabel(metric)
    axes.set_title("metric vs speedup (grey: 99% / 98% of the last tier)")
    axes.legend()
    figure.savefig(path, dpi=120)
    return path


def throughput_vs_metric(results: dict, path: Path) -> Path:
    """Fig. 3: predicted cascade throughput against the metric, at batch size 1 and at the tuned sizes."""
    sweep, metric = results["sweep"], results["metric"]
    sizes = results["costs"]["tuned"]["batch_sizes"]
    figure, axes = _figure()
    x = [row["metric"] for row in sweep]
    axes.plot(x, [row["throughput_batch1"] for row in sweep], label="cascade, batch size 1")
    axes.plot(x, [row["throughput_tuned"] for row in sweep], label=f"cascade, batch sizes {sizes[0]}/{sizes[-1]}")
    for name, style, label in (("batch1", ":", "last tier alone, batch size 1"), ("tuned", "--", "last tier alone, tuned")):
        axes.axhline(results["table3"][name]["last_alone"], linestyle=style, color="grey", linewidth=0.8, label=label)
    axes.set_yscale("log")
    axes.set_xlabel(metric)
    axes.set_ylabel("instances / s (log scale)")
    axes.set_title("predicted throughput vs metric")
    axes.legend()
    figure.savefig(path, dpi=120)
    return path


def fixes_heatmap(results: dict, path: Path) -> Path:
    """Fig. 4: per tier-1 confidence decile, tier-1 errors fixed by the last tier and correct answers it broke."""
    deciles = results["deciles"]
    grid = [deciles["fixed"], deciles["broken"]]
    figure, axes = _figure(8.0, 2.8)
    image = axes.imshow(grid, cmap="viridis", aspect="auto")
    for row, values in enumerate(grid):
        for col, value in enumerate(values):
            axes.text(col, row, str(value), ha="center", va="center", color="white" if value < max(map(max, grid)) / 2 else "black")
    axes.set_yticks([0, 1], labels=["fixed by last tier", "broken by last tier"])
    axes.set_xticks(range(len(deciles["fixed"])), labels=[str(i + 1) for i in range(len(deciles["fixed"]))])
    axes.set_xlabel("tier-1 confidence decile (1 = least confident)")
    figure.colorbar(image, ax=axes, label="inputs")
    figure.savefig(path, dpi=120)
    return path


def save_figures(results: dict, directory: Path) -> list[Path]:
    """Write the three figures into `directory` (created if needed)."""
    require_matplotlib()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    drawers = (metric_vs_speedup, throughput_vs_metric, fixes_heatmap)
    return [draw(results, directory / name) for draw, name in zip(drawers, FIGURES)]
