"""`tango-edge calibrate`: choose the thresholds on labelled data and reproduce the paper's analyses.

Every tier runs once over the data (`Tier.logits`) and once more, alone, in the timed rounds that give its cost
per instance. Then, all in numpy (routing.py): per-tier temperatures are fitted (temperature.py); the first and
last tiers form the two-tier analysis of the paper (cascade, random and oracle routing by deferral count,
Tables 2 and 3, Fig. 2-4); with three or more tiers, a search over every tier's thresholds finds the cheapest
combination reaching the target and the speed/metric frontier, next to the best two-tier cascade of the same
first and last tiers. The chosen thresholds, temperatures and deferral shares go to cascade.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TangoEdgeError
from .metrics import confusion, confusion_metric_fn
from .routing import (
    Choice,
    Costs,
    Curve,
    Operating,
    cascade_curve,
    choose_threshold,
    early_exit_curve,
    fixes_by_confidence_decile,
    oracle_metric_by_deferral,
    random_metric_by_deferral,
    search_thresholds,
    smallest_deferral,
    tier_outputs,
    two_tier_reach,
)
from .temperature import at_search_edge, fit_temperature, nll, rankings_agree

TABLE_TARGETS = (0.99, 0.98)  # the paper's Tables 2 and 3
SWEEP_POINTS = 200  # rows of the reported sweep (the threshold choice itself uses every cut point)



# ---- the two-tier analysis (first and last tier) -------------------------------------------------------------


@dataclass
class Analysis:
    """Every routing's metric by deferral count, for the first tier's confidences at one temperature."""

    temperature: float
    confidence: np.ndarray
    pred1: np.ndarray
    pred2: np.ndarray
    gold: np.ndarray
    curve: Curve
    random_by_k: np.ndarray
    oracle_by_k: np.ndarray
    metric1: float
    metric2: float

    @property
    def n(self) -> int:
        return len(self.gold)

    def required(self, target: float) -> float:
        return target * self.metric2

    def cascade_choice(self, target: float) -> Choice | None:
        return choose_threshold(self.curve, self.required(target))

    def random_deferral(self, target: float) -> float | None:
        k = smallest_deferral(self.random_by_k, self.required(target))
        return None if k is None else k / self.n

    def oracle_deferral(self, target: float) -> float | None:
        k = smallest_deferral(self.oracle_by_k, self.required(target))
        return None if k is None else k / self.n


def analyse(logits1: np.ndarray, pred2: np.ndarray, gold: np.ndarray, metric: str, num_classes: int, temperature: float = 1.0) -> Analysis:
    """The cascade curve and both baselines for first-tier logits scaled by `temperature`."""
    confidence, pred1 = tier_outputs(logits1, temperature)
    curve = cascade_curve(confidence, pred1, pred2, gold, metric, num_classes)
    random_by_k = random_metric_by_deferral(pred1, pred2, gold, metric, num_classes)
    oracle_by_k = oracle_metric_by_deferral(pred1, pred2, gold, metric, num_classes)
    score = confusion_metric_fn(metric)
    metric1 = float(score(confusion(gold, pred1, num_classes)))
    metric2 = float(score(confusion(gold, pred2, num_classes)))
    return Analysis(temperature, confidence, pred1, np.asarray(pred2), np.asarray(gold), curve, random_by_k, oracle_by_k, metric1, metric2)


def sweep_indices(deferred: np.ndarray, n: int, points: int = SWEEP_POINTS) -> np.ndarray:
    """About `points` cut points spread evenly over the deferral rate (all of them when there are fewer)."""
    if len(deferred) <= points + 1:
        return np.arange(len(deferred))
    wanted = np.linspace(0, n, points + 1)
    return np.unique(np.searchsorted(deferred, wanted).clip(max=len(deferred) - 1))


def sweep_rows(analysis: Analysis, costs: dict[str, Costs], points: int = SWEEP_POINTS) -> list[dict]:
    """The reported sweep: per threshold, deferral rate, each routing's metric and the predicted throughput."""
    curve = analysis.curve
    rows = []
    for i in sweep_indices(curve.deferred, curve.n, points):
        k = int(curve.deferred[i])
        f = k / curve.n
        reach = two_tier_reach(f)
        rows.append({
            "threshold": float(curve.thresholds[i]),
            "deferred": k,
            "deferral_rate": f,
            "metric": float(curve.metric[i]),
            "random_metric": float(analysis.random_by_k[k]),
            "oracle_metric": float(analysis.oracle_by_k[k]),
            "speedup": float(costs["tuned"].speedup(reach)),
            "throughput_tuned": float(costs["tuned"].throughput(reach)),
            "throughput_batch1": float(costs["batch1"].throughput(reach)),
        })
    return rows


def table_targets(target: float) -> list[float]:
    """The paper's 99% and 98%, plus the requested target, highest first."""
    return sorted({*TABLE_TARGETS, round(target, 6)}, reverse=True)


def speedup_table(analysis: Analysis, costs: Costs, targets: Sequence[float]) -> dict:
    """Table 2: per target, each routing's lowest deferral rate reaching it and the resulting speedup."""
    table = {}
    for target in targets:
        choice = analysis.cascade_choice(target)
        rates = {"random": analysis.random_deferral(target), "cascade": None if choice is None else choice.deferral_rate, "oracle": analysis.oracle_deferral(target)}
        table[f"{target:g}"] = {name: None if f is None else {"deferral_rate": f, "speedup": float(costs.speedup(two_tier_reach(f)))} for name, f in rates.items()}
    return table


def early_exit_analysis(model, last_tier, texts: Sequence, gold: np.ndarray, metric: str, num_classes: int, last_metric: float, tuned_batch_size: int, targets: Sequence[float], rounds: int) -> dict:
    """DeeBERT's sweep on the data, its per-layer costs at batch size 1 and its cheapest threshold per target.
    DeeBERT runs one input at a time (exits are per input); its batch-size-1 speedup is over the last tier alone
    run the same way (one input at a time, one request), its tuned one over the last tier at its tuned batch size.
    The threshold of each target is also run for real, with exits, to check the predicted cost. The logits are
    computed one input at a time too, so the sweep sees what the real run sees."""
    from .early_exit import entropy
    from .timing import measure_early_exit

    log(f"early exit: every layer's logits on {len(texts)} inputs ...")
    layer_logits = model.layer_logits(model.encoder.encode(list(texts)), batch_size=1)
    entropies = entropy(layer_logits)
    score = confusion_metric_fn(metric)
    layer_metrics = [float(score(confusion(gold, logits.argmax(-1), num_classes))) for logits in layer_logits]
    # Exits only move earlier as the threshold grows, so whatever the per-layer costs, the cheapest threshold
    # meeting a target is the highest that meets it: known before timing, so it can be run for real in the rounds.
    provisional = early_exit_curve(layer_logits, entropies, gold, np.ones(model.num_layers), metric, num_classes)
    picks = {f"{t:g}": provisional.cheapest_meeting(t * last_metric) for t in targets}
    to_run = {name: float(provisional.thresholds[i]) for name, i in picks.items() if i is not None}
    log(f"early exit: timing {model.num_layers} stages one input at a time against the last tier alone, {rounds} interleaved rounds ...")
    timed = measure_early_exit(model, last_tier, texts, tuned_batch_size, rounds, to_run, progress=lambda done, total: log(f"early-exit timing round {done}/{total}"))
    curve = early_exit_curve(layer_logits, entropies, gold, timed["stage_seconds"], metric, num_classes)
    last = timed["last_seconds"]
    table = {}
    for target in targets:
        i = curve.cheapest_meeting(target * last_metric)
        name = f"{target:g}"
        table[name] = None if i is None else {
            "threshold": float(curve.thresholds[i]),
            "metric": float(curve.metric[i]),
            "mean_exit_layer": float(curve.mean_exit[i]),
            "seconds": float(curve.seconds[i]),
            "speedup_batch1": last["sequential"] / float(curve.seconds[i]),
            "speedup_tuned": last["tuned"] / float(curve.seconds[i]),
        }
        if name in timed["measured_exit_seconds"]:
            measured = timed["measured_exit_seconds"][name]
            table[name].update({"measured_seconds": measured, "measured_speedup_batch1": last["sequential"] / measured})
    step = max(1, len(curve.thresholds) // SWEEP_POINTS)
    sweep = [
        {"threshold": float(curve.thresholds[i]), "metric": float(curve.metric[i]), "mean_exit_layer": float(curve.mean_exit[i]), "speedup_batch1": last["sequential"] / float(curve.seconds[i]), "speedup_tuned": last["tuned"] / float(curve.seconds[i])}
        for i in range(0, len(curve.thresholds), step)
    ]
    return {"folder": str(model.folder), "layers": model.num_layers, "layer_metrics": layer_metrics, "timing": timed, "table": table, "sweep": sweep}


def throughput_table(analysis: Analysis, costs: dict[str, Costs], targets: Sequence[float]) -> dict:
    """Table 3: instances/s of the last tier alone and of the cascade at each target, per batch-size setting."""
    table = {name: {"last_alone": 1.0 / c.seconds[-1]} for name, c in costs.items()}
    for target in targets:
        choice = analysis.cascade_choice(target)
        for name, c in costs.items():
            table[name][f"cascade_{target:g}"] = None if choice is None else float(c.throughput(two_tier_reach(choice.deferral_rate)))
    return table


def temperature_decision(plain: Analysis, scaled: Analysis | None, target: float, binary: bool, fitted_nll: tuple[float, float] | None) -> tuple[Analysis, dict]:
    """Keep the fitted temperature only if the deferral rate needed at `target` is no higher than without it."""
    if scaled is None:
        return plain, {"fitted": None, "kept": False, "reason": "skipped (--no-temperature)"}
    with_t, without_t = scaled.cascade_choice(target), plain.cascade_choice(target)
    f_with = np.inf if with_t is None else with_t.deferral_rate
    f_without = np.inf if without_t is None else without_t.deferral_rate
    keep = f_with <= f_without
    same_ranking = rankings_agree(plain.confidence, scaled.confidence)
    why = (
        "binary task: T cannot change the confidence ranking (top probability = sigmoid(|margin| / T)), only the threshold's value"
        if binary
        else ("the confidence ranking is unchanged" if same_ranking else "the confidence ranking changed (possible with 3+ classes)")
    )
    report = {
        "fitted": scaled.temperature,
        "at_search_edge": at_search_edge(scaled.temperature),
        "nll_before": fitted_nll[0],
        "nll_after": fitted_nll[1],
        "deferral_with": None if with_t is None else float(f_with),
        "deferral_without": None if without_t is None else float(f_without),
        "ranking_unchanged": same_ranking,
        "kept": bool(keep),
        "reason": why,
    }
    return (scaled if keep else plain), report


# ---- N tiers -------------------------------------------------------------------------------------------------


def operating_dict(point: Operating, costs: dict[str, Costs]) -> dict:
    return {
        **asdict(point),
        "speedup": point.speedup(costs["tuned"]),
        "throughput_tuned": float(costs["tuned"].throughput(point.reach)),
        "throughput_batch1": float(costs["batch1"].throughput(point.reach)),
    }


def search_tiers(logits: Sequence[np.ndarray], gold: np.ndarray, metric: str, num_classes: int, costs: dict[str, Costs], temperatures: Sequence[float], required: float) -> dict:
    """The N-tier threshold search at these temperatures: the chosen point, the frontier, and the best point
    that skips every middle tier (the two-tier cascade of the first and last tiers)."""
    outputs = [tier_outputs(logits[k], temperatures[k] if k < len(temperatures) else 1.0) for k in range(len(logits))]
    confidences, preds = [o[0] for o in outputs], [o[1] for o in outputs]
    search = search_thresholds(confidences, preds, gold, metric, num_classes, costs["tuned"])
    chosen, pair = search.best_meeting(required), search.best_meeting(required, search.skips_middle())
    return {
        "temperatures": list(temperatures),
        "chosen": None if chosen is None else operating_dict(chosen, costs),
        "first_and_last_only": None if pair is None else operating_dict(pair, costs),
        "frontier": [operating_dict(p, costs) for p in search.frontier()],
        "combinations": len(search.metric),
    }


# ---- loading -------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"calibrate: {message}", file=sys.stderr, flush=True)


def check_metric_fits(metric: str, num_classes: int) -> None:
    """cascade.json's metric must be defined for the task: F1 is binary."""
    if metric == "f1" and num_classes != 2:
        raise TangoEdgeError(f"metric f1 is binary F1 but the task has {num_classes} classes; set metric to accuracy or mcc in cascade.json")


def load_labelled(path: str, config, num_classes: int, purpose: str = "calibration"):
    """Labelled data (for `purpose`), with the columns cascade.json names, checked against the tiers' labels."""
    from .data import read_tsv

    try:
        data = read_tsv(path, config.text_columns, config.label_column)
    except FileNotFoundError:
        raise TangoEdgeError(f"{purpose} data {path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError, StopIteration) as exc:
        raise TangoEdgeError(f"cannot read {purpose} data {path}: {exc}") from None
    if len(data.labels) < 2:
        raise TangoEdgeError(f"{path} holds {len(data.labels)} labelled rows; {purpose} needs more")
    gold = np.asarray(data.labels, dtype=np.int64)
    if gold.min() < 0 or gold.max() >= num_classes:
        raise TangoEdgeError(f"{path}: labels must be class indices 0..{num_classes - 1}; found {sorted(set(data.labels))[:10]}")
    return data.texts, gold


def write_choice(directory: Path, thresholds: Sequence[float], temperatures: Sequence[float], deferral_rates: Sequence[float]) -> Path:
    """Store thresholds, temperatures and deferral shares in cascade.json (version 2), keeping machine fields
    (batch sizes, streams) only if the file had them."""
    from .config import CASCADE_FILE, CascadeConfig

    raw = json.loads((directory / CASCADE_FILE).read_text(encoding="utf-8"))
    had_machine_fields = any(key.endswith(("_batch_size", "_streams")) for key in raw) or any(
        "batch_size" in t or "streams" in t for t in raw.get("tiers", []) if isinstance(t, dict)
    )
    config = CascadeConfig.load(directory).replace(thresholds=list(thresholds), temperatures=list(temperatures), deferral_rates=list(deferral_rates))
    return config.save(directory, keep_machine_fields=had_machine_fields)


# ---- the command ---------------------------------------------------------------------------------------------


def calibrate_command(args) -> int:
    from .config import CascadeConfig
    from .profile import apply_profile, machine_summary
    from .report import format_report
    from .tier import Tier
    from .timing import measure_costs

    directory = Path(args.models)
    if not directory.is_dir():
        raise TangoEdgeError(f"model folder {directory} does not exist")
    if args.plots:
        from .plots import require_matplotlib

        require_matplotlib()  # fail before the slow part
    stored = CascadeConfig.load(directory)
    config, note = apply_profile(stored, directory, args.device)
    if note:
        log(f"note: {note}")
    tiers = [Tier(directory / t.dir, max_length=config.max_length, device=args.device, streams=t.streams, inference_precision=config.inference_precision, tokenizer=config.tokenizer) for t in config.tiers]
    labels = tiers[0].labels
    for tier_config, tier in zip(config.tiers[1:], tiers[1:]):
        if tier.labels != labels:
            raise TangoEdgeError(f"the tiers disagree on labels: {config.tiers[0].dir} {labels} vs {tier_config.dir} {tier.labels}")
    num_classes = len(labels)
    check_metric_fits(config.metric, num_classes)
    texts, gold = load_labelled(args.data, config, num_classes)
    early_exit = None
    if args.early_exit:
        from .early_exit import EarlyExitModel

        early_exit = EarlyExitModel(args.early_exit, max_length=config.max_length, device=args.device, inference_precision=config.inference_precision)
        if early_exit.labels != labels:
            raise TangoEdgeError(f"the early-exit model's labels {early_exit.labels} differ from the cascade's {labels}")

    batch_sizes = config.batch_sizes
    logits = []
    for index, tier in enumerate(tiers):
        log(f"tier {index + 1} logits on {len(texts)} inputs (batch size {batch_sizes[index]}) ...")
        logits.append(tier.logits(tier.encoder.encode(texts), batch_sizes[index]))
    log(f"timing each tier alone at batch sizes {batch_sizes} and 1, {args.rounds} interleaved rounds ...")
    costs, cost_report = measure_costs(tiers, texts, batch_sizes, args.rounds, progress=lambda done, total: log(f"timing round {done}/{total}"))

    _, pred_last = tier_outputs(logits[-1])
    plain = analyse(logits[0], pred_last, gold, config.metric, num_classes, 1.0)
    if plain.metric2 <= 0:
        raise TangoEdgeError(f"the last tier's {config.metric} on {args.data} is {plain.metric2:.4f}; a share of it is no target (check the labels and columns)")
    routing_tiers = range(len(tiers) - 1)
    fitted = [] if args.no_temperature else [fit_temperature(logits[k], gold) for k in routing_tiers]
    scaled = None if args.no_temperature else analyse(logits[0], pred_last, gold, config.metric, num_classes, fitted[0])
    nlls = None if args.no_temperature else (nll(logits[0], gold, 1.0), nll(logits[0], gold, fitted[0]))
    pair_costs = {name: c.pair() for name, c in costs.items()}
    pair, temperature_report = temperature_decision(plain, scaled, args.target, num_classes == 2, nlls)
    if not args.no_temperature:
        temperature_report["per_tier"] = [{"tier": k + 1, "fitted": fitted[k], "nll_before": nll(logits[k], gold, 1.0), "nll_after": nll(logits[k], gold, fitted[k])} for k in routing_tiers]
    required = pair.required(args.target)
    targets = table_targets(args.target)

    search = None
    if len(tiers) == 2:
        choice = pair.cascade_choice(args.target)
        if choice is None:
            raise TangoEdgeError(f"no threshold reaches {args.target:g} x the last tier's {config.metric} ({plain.metric2:.4f}) on this data")
        thresholds, temperatures, passed = [choice.threshold], [pair.temperature], [choice.deferral_rate]
        reach = two_tier_reach(choice.deferral_rate)
    else:
        plain_search = search_tiers(logits, gold, config.metric, num_classes, costs, [1.0] * len(routing_tiers), required)
        search = plain_search
        if fitted:
            scaled_search = search_tiers(logits, gold, config.metric, num_classes, costs, fitted, required)
            cost_of = lambda s: np.inf if s["chosen"] is None else s["chosen"]["seconds"]
            keep = cost_of(scaled_search) <= cost_of(plain_search)
            temperature_report["kept_for_search"] = bool(keep)
            search = scaled_search if keep else plain_search
        point = search["chosen"]
        if point is None:
            raise TangoEdgeError(f"no thresholds reach {args.target:g} x the last tier's {config.metric} ({plain.metric2:.4f}) on this data")
        thresholds, temperatures, passed, reach = point["thresholds"], search["temperatures"], point["passed"], point["reach"]
    chosen = {
        "thresholds": list(thresholds),
        "temperatures": list(temperatures),
        "deferral_rates": list(passed),
        "reach": list(np.asarray(reach, dtype=float).tolist()),
        "metric": search["chosen"]["metric"] if search else pair.cascade_choice(args.target).metric,
        "target": args.target,
        "required": required,
        "speedup": float(costs["tuned"].speedup(reach)),
        "throughput": float(costs["tuned"].throughput(reach)),
    }
    results = {
        "data": str(args.data),
        "machine": machine_summary(),
        "instances": len(gold),
        "labels": labels,
        "metric": config.metric,
        "target": args.target,
        "tiers": [t.dir for t in config.tiers],
        "first_metric": pair.metric1,
        "last_metric": pair.metric2,
        "tier_metrics": [float(confusion_metric_fn(config.metric)(confusion(gold, tier_outputs(l)[1], num_classes))) for l in logits],
        "tuned_profile": note is None,
        "batch_sizes_from": "this machine's autotune profile" if note is None else "defaults (no valid profile; run `tango-edge autotune`)",
        "costs": {name: {"seconds": list(c.seconds), "batch_sizes": list(c.batch_sizes)} for name, c in costs.items()},
        "timing": {"rounds": args.rounds, "settings": cost_report},
        "temperature": temperature_report,
        "chosen": chosen,
        "table2": speedup_table(pair, pair_costs["tuned"], targets),
        "table2_batch1": speedup_table(pair, pair_costs["batch1"], targets),
        "table3": throughput_table(pair, pair_costs, targets),
        "sweep": sweep_rows(pair, pair_costs),
        "deciles": fixes_by_confidence_decile(pair.confidence, pair.pred1, pred_last, gold),
        "search": search,
        "early_exit": None,
        "written": None,
    }
    if early_exit is not None:
        results["early_exit"] = early_exit_analysis(early_exit, tiers[-1], texts, gold, config.metric, num_classes, pair.metric2, batch_sizes[-1], targets, args.rounds)
    if not args.no_write:
        results["written"] = str(write_choice(directory, thresholds, temperatures, passed))
        log(f"wrote thresholds {[round(t, 6) for t in thresholds]} and temperatures {[round(t, 4) for t in temperatures]} to {results['written']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        log(f"results written to {args.json_out}")
    if args.plots:
        from .plots import save_figures

        for path in save_figures(results, Path(args.plots)):
            log(f"plot written to {path}")
    print(format_report(results))
    return 0
