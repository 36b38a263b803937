"""`tango-edge calibrate`: choose the deferral threshold on labelled data and reproduce the paper's analyses.

Both tiers run once over the data (`Tier.logits`). Every routing studied is then a *deferral order*: defer
the first k inputs of some order to tier 2 and keep tier 1's answer for the rest. The cascade's order is
"least confident first" (a threshold defers the inputs below it); random routing uses random orders; the
oracle defers tier-1 errors first. For any order, the confusion matrices for all k = 0..n come from one
cumulative sum, so the metric at every deferral rate costs O(n) and no threshold grid is ever guessed.

Throughput is predicted rather than measured per threshold: with t1, t2 the measured seconds per instance of
each tier alone, a cascade deferring a share f costs t1 + f * t2 per instance, so its speedup over tier 2
alone is t2 / (t1 + f * t2). All three routings are charged the same formula (tier 1 runs on every input),
so they differ only in which inputs they defer.

Temperature scaling (Guo et al. 2017; Schwartz et al. 2020) divides tier 1's logits by T, fitted by
minimising the negative log-likelihood on the calibration data. It never changes tier 1's answers (argmax).
For two classes it cannot change which inputs are deferred either: the top probability is
sigmoid(|z1 - z0| / T), increasing in the margin |z1 - z0| for every T > 0, so the confidence ranking, and
with it the metric at each deferral rate, stays the same; only the threshold's value moves (float32 ties at
saturated confidences aside). With three or more classes the ranking can change, and so can the speedup.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import TangoEdgeError
from .metrics import confusion, confusion_metric_fn

TABLE_TARGETS = (0.99, 0.98)  # the paper's Tables 2 and 3
SWEEP_POINTS = 200  # rows of the reported sweep (the threshold choice itself uses every cut point)
RANDOM_DRAWS = 200  # random routings averaged when the expected metric has no closed form
RANDOM_SEED = 0
TIER2_ONLY_THRESHOLD = 2.0  # above any confidence: the runtime then sends everything to tier 2
TIMING_SENTENCES = {"tier1": 2048, "tier2": 256}  # per timed pass; tier 1 is ~30x faster than tier 2
DECILES = 10
LOG_T_RANGE = (-3.0, 3.0)  # temperature search interval, in log T


# ---- what the runtime computes -------------------------------------------------------------------------------


def tier1_outputs(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) exactly as the runtime computes them: float32 softmax of logits / T.

    Using the runtime's arithmetic makes a threshold chosen here defer exactly the same inputs at run time.
    """
    from .tier import softmax

    probs = softmax(np.asarray(logits, dtype=np.float32) / float(temperature))
    return probs.max(axis=1), probs.argmax(axis=1)


def tier2_predictions(logits: np.ndarray) -> np.ndarray:
    from .tier import softmax

    return softmax(np.asarray(logits, dtype=np.float32)).argmax(axis=1)


# ---- routings as deferral orders -----------------------------------------------------------------------------


def confusion_by_deferral(order: np.ndarray, pred1: np.ndarray, pred2: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[k] (k = 0..n): the confusion matrix when the first k inputs of `order` take tier 2's answer.

    Shape (n + 1, K, K). Deferring input i moves one count from cell (gold, pred1) to cell (gold, pred2).
    """
    order = np.asarray(order)
    gold, pred1, pred2 = (np.asarray(a, dtype=np.int64)[order] for a in (gold, pred1, pred2))
    n, cells = len(order), num_classes * num_classes
    moves = np.zeros((n, cells), dtype=np.int64)
    rows = np.arange(n)
    moves[rows, gold * num_classes + pred2] += 1
    moves[rows, gold * num_classes + pred1] -= 1
    start = confusion(gold, pred1, num_classes).reshape(1, cells)
    counts = np.concatenate([np.zeros((1, cells), dtype=np.int64), np.cumsum(moves, axis=0)]) + start
    return counts.reshape(n + 1, num_classes, num_classes)


def metric_by_deferral(order, pred1, pred2, gold, metric: str, num_classes: int) -> np.ndarray:
    """The metric for k = 0..n inputs deferred in `order`."""
    return confusion_metric_fn(metric)(confusion_by_deferral(order, pred1, pred2, gold, num_classes))


def cascade_order(confidence: np.ndarray) -> np.ndarray:
    """Least confident first: the order in which a rising threshold defers inputs."""
    return np.argsort(confidence, kind="stable")


def oracle_order(pred1: np.ndarray, pred2: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Tier-1 errors first, those tier 2 fixes ahead of those it does not; then tier 1's correct answers,
    those tier 2 keeps right ahead of those it would break."""
    wrong1, right2 = np.asarray(pred1) != np.asarray(gold), np.asarray(pred2) == np.asarray(gold)
    priority = np.select([wrong1 & right2, wrong1, right2], [0, 1, 2], default=3)
    return np.argsort(priority, kind="stable")


def oracle_metric_by_deferral(pred1, pred2, gold, metric: str, num_classes: int) -> np.ndarray:
    """The oracle's metric for a deferral budget of k = 0..n: it defers min(k, #tier-1 errors) inputs."""
    by_k = metric_by_deferral(oracle_order(pred1, pred2, gold), pred1, pred2, gold, metric, num_classes)
    errors = int(np.sum(np.asarray(pred1) != np.asarray(gold)))
    return by_k[np.minimum(np.arange(len(by_k)), errors)]


def random_metric_by_deferral(pred1, pred2, gold, metric: str, num_classes: int, draws: int = RANDOM_DRAWS, seed: int = RANDOM_SEED) -> np.ndarray:
    """Expected metric when k = 0..n inputs, drawn uniformly, are deferred.

    Exact for accuracy (linear in k); for F1 and MCC, the mean over `draws` random orders from a fixed seed.
    """
    gold, pred1, pred2 = (np.asarray(a) for a in (gold, pred1, pred2))
    n = len(gold)
    if metric == "accuracy":
        share = np.arange(n + 1) / n
        return (1 - share) * np.mean(pred1 == gold) + share * np.mean(pred2 == gold)
    rng = np.random.default_rng(seed)
    total = np.zeros(n + 1)
    for _ in range(draws):
        total += metric_by_deferral(rng.permutation(n), pred1, pred2, gold, metric, num_classes)
    return total / draws


# ---- thresholds ----------------------------------------------------------------------------------------------


def cut_points(sorted_confidence: np.ndarray) -> np.ndarray:
    """The deferral counts a threshold can produce: 0, n, and every k where sorted[k-1] < sorted[k].

    Inputs with equal confidence are always deferred together.
    """
    s = np.asarray(sorted_confidence)
    inner = np.flatnonzero(s[1:] > s[:-1]) + 1
    return np.concatenate([[0], inner, [len(s)]]).astype(np.int64)


def threshold_for_cut(sorted_confidence: np.ndarray, k: int) -> float:
    """A threshold deferring exactly the k least confident inputs (runtime rule: defer when confidence < threshold).

    Midway between the k-th and (k+1)-th confidences, as a float32 (the runtime compares in float32), so small
    numerical differences at run time do not move inputs across it; k = 0 gives the lowest confidence (defers
    none of these inputs), k = n a value above 1 (tier 2 only).
    """
    s = np.asarray(sorted_confidence, dtype=np.float32)
    if k <= 0:
        return float(s[0])
    if k >= len(s):
        return TIER2_ONLY_THRESHOLD
    lower, upper = s[k - 1], s[k]
    middle = np.float32((float(lower) + float(upper)) / 2)
    return float(upper) if middle <= lower else float(middle)


def confidence_ranking(tier1, encoded: list, temperature: float, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Tier 1's confidences on encoded inputs in ascending order, and the input order that sorts them."""
    confidence, _ = tier1_outputs(tier1.logits(encoded, batch_size), temperature)
    order = np.argsort(confidence, kind="stable")
    return confidence[order], order


def threshold_for_rate(sorted_confidence: np.ndarray, rate: float) -> float:
    """A threshold deferring the least confident `rate` share of these inputs."""
    return threshold_for_cut(sorted_confidence, int(round(rate * len(sorted_confidence))))


@dataclass
class Curve:
    """The cascade's operating points: for each cut point, the count deferred, its threshold and the metric."""

    deferred: np.ndarray
    thresholds: np.ndarray
    metric: np.ndarray
    n: int

    @property
    def deferral_rate(self) -> np.ndarray:
        return self.deferred / self.n


def cascade_curve(confidence, pred1, pred2, gold, metric: str, num_classes: int) -> Curve:
    """The metric at every threshold that changes which inputs are deferred."""
    order = cascade_order(confidence)
    by_k = metric_by_deferral(order, pred1, pred2, gold, metric, num_classes)
    sorted_confidence = np.asarray(confidence)[order]
    ks = cut_points(sorted_confidence)
    thresholds = np.array([threshold_for_cut(sorted_confidence, k) for k in ks])
    return Curve(ks, thresholds, by_k[ks], len(order))


def first_meeting(values: np.ndarray, required: float) -> int | None:
    """Index of the first value >= required (a 1e-12 slack absorbs float rounding), None if none is."""
    hits = np.flatnonzero(np.asarray(values) >= required - 1e-12)
    return int(hits[0]) if len(hits) else None


@dataclass
class Choice:
    """The chosen operating point."""

    threshold: float
    deferred: int
    deferral_rate: float
    metric: float


def choose_threshold(curve: Curve, required: float) -> Choice | None:
    """The threshold with the lowest deferral rate (so the highest throughput) whose metric reaches `required`."""
    index = first_meeting(curve.metric, required)
    if index is None:
        return None
    k = int(curve.deferred[index])
    return Choice(float(curve.thresholds[index]), k, k / curve.n, float(curve.metric[index]))


def smallest_deferral(metric_by_k: np.ndarray, required: float) -> int | None:
    """The fewest deferred inputs (k) at which a routing's metric reaches `required`."""
    return first_meeting(metric_by_k, required)


# ---- cost model ----------------------------------------------------------------------------------------------


def cascade_seconds(deferral_rate, t1: float, t2: float):
    """Seconds per instance of the cascade: tier 1 on everything, tier 2 on the deferred share."""
    return t1 + np.asarray(deferral_rate, dtype=np.float64) * t2


def throughput(deferral_rate, t1: float, t2: float):
    """Cascade instances per second: 1 / (t1 + f t2)."""
    return 1.0 / cascade_seconds(deferral_rate, t1, t2)


def speedup(deferral_rate, t1: float, t2: float):
    """Tier-2-alone time over cascade time: t2 / (t1 + f t2)."""
    return t2 / cascade_seconds(deferral_rate, t1, t2)


@dataclass(frozen=True)
class Costs:
    """Measured seconds per instance of each tier alone, at the batch sizes they were measured with."""

    tier1: float
    tier2: float
    tier1_batch_size: int
    tier2_batch_size: int

    def speedup(self, deferral_rate):
        return speedup(deferral_rate, self.tier1, self.tier2)

    def throughput(self, deferral_rate):
        return throughput(deferral_rate, self.tier1, self.tier2)


# ---- temperature scaling -------------------------------------------------------------------------------------


def nll(logits: np.ndarray, gold: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the gold labels under softmax(logits / T), in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(gold)]))


def golden_section_minimize(fn: Callable[[float], float], lo: float, hi: float, tol: float = 1e-5, max_iter: int = 200) -> float:
    """The minimiser of a unimodal function on [lo, hi] by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(max_iter):
        if b - a <= tol:
            break
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = fn(d)
    return (a + b) / 2


def fit_temperature(logits: np.ndarray, gold: np.ndarray, log_range: tuple[float, float] = LOG_T_RANGE) -> float:
    """The T minimising the NLL of softmax(logits / T), searched over log T in `log_range`.

    The NLL is convex in 1/T (a log-sum-exp minus a linear term), hence unimodal in log T: golden-section
    search finds the optimum, or the interval's end when the optimum lies outside it.
    """
    return math.exp(golden_section_minimize(lambda u: nll(logits, gold, math.exp(u)), *log_range))


def rankings_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """True when no pair of inputs is ordered one way by `a` and the other way by `b` (ties may differ)."""
    a, b = np.asarray(a), np.asarray(b)
    by_a = np.lexsort((b, a))
    by_b = np.lexsort((a, b))
    return bool(np.all(np.diff(b[by_a]) >= 0) and np.all(np.diff(a[by_b]) >= 0))


# ---- Fig. 4 --------------------------------------------------------------------------------------------------


def fixes_by_confidence_decile(confidence, pred1, pred2, gold, bins: int = DECILES) -> dict:
    """Per tier-1 confidence decile (equal counts, least confident first): tier-1 errors tier 2 fixes ("fixed")
    and tier-1 correct answers tier 2 gets wrong ("broken"), with each decile's confidence range."""
    confidence, pred1, pred2, gold = (np.asarray(a) for a in (confidence, pred1, pred2, gold))
    n = len(confidence)
    order = cascade_order(confidence)
    decile = np.empty(n, dtype=np.int64)
    decile[order] = np.arange(n) * bins // n
    fixed = (pred1 != gold) & (pred2 == gold)
    broken = (pred1 == gold) & (pred2 != gold)
    sorted_conf = confidence[order]
    starts = -(-np.arange(bins + 1) * n // bins)  # ceil(d n / bins): decile d holds sorted positions starts[d] .. starts[d+1]-1
    bounds = [(float(sorted_conf[lo]), float(sorted_conf[hi - 1])) if hi > lo else (None, None) for lo, hi in zip(starts[:-1], starts[1:])]
    return {
        "fixed": np.bincount(decile[fixed], minlength=bins).tolist(),
        "broken": np.bincount(decile[broken], minlength=bins).tolist(),
        "count": np.bincount(decile, minlength=bins).tolist(),
        "confidence_range": bounds,
    }


# ---- one analysis (at one temperature) -----------------------------------------------------------------------


@dataclass
class Analysis:
    """Every routing's metric by deferral count, for tier-1 confidences at one temperature."""

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
    """The cascade curve and both baselines for tier-1 logits scaled by `temperature`."""
    confidence, pred1 = tier1_outputs(logits1, temperature)
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
        rows.append({
            "threshold": float(curve.thresholds[i]),
            "deferred": k,
            "deferral_rate": f,
            "metric": float(curve.metric[i]),
            "random_metric": float(analysis.random_by_k[k]),
            "oracle_metric": float(analysis.oracle_by_k[k]),
            "speedup": float(costs["tuned"].speedup(f)),
            "throughput_tuned": float(costs["tuned"].throughput(f)),
            "throughput_batch1": float(costs["batch1"].throughput(f)),
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
        table[f"{target:g}"] = {name: None if f is None else {"deferral_rate": f, "speedup": float(costs.speedup(f))} for name, f in rates.items()}
    return table


def throughput_table(analysis: Analysis, costs: dict[str, Costs], targets: Sequence[float]) -> dict:
    """Table 3: instances/s of tier 2 alone and of the cascade at each target, per batch-size setting."""
    table = {name: {"tier2_alone": 1.0 / c.tier2} for name, c in costs.items()}
    for target in targets:
        choice = analysis.cascade_choice(target)
        for name, c in costs.items():
            table[name][f"cascade_{target:g}"] = None if choice is None else float(c.throughput(choice.deferral_rate))
    return table


# ---- measuring -----------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"calibrate: {message}", file=sys.stderr, flush=True)


def measure_costs(tiers: dict, texts: Sequence, tuned_batch_sizes: dict[str, int], rounds: int) -> tuple[dict[str, Costs], dict]:
    """Seconds per instance of each tier alone (tokenization included) at its tuned batch size and at 1.

    Median of `rounds` interleaved rounds; returns ({"tuned": Costs, "batch1": Costs}, per-setting summaries).
    """
    from .autotune import instances_per_second, measure_rounds, pass_texts, summarize

    timing_texts = {name: pass_texts(texts, min(len(texts), TIMING_SENTENCES[name])) for name in tiers}
    candidates = [(name, size) for name in tiers for size in sorted({1, tuned_batch_sizes[name]})]
    for name, size in candidates:  # warm-up: first contact with each batch shape
        instances_per_second(tiers[name], timing_texts[name][:64], size)
    rates = measure_rounds(candidates, lambda c: instances_per_second(tiers[c[0]], timing_texts[c[0]], c[1]), rounds, progress=lambda done, total: log(f"timing round {done}/{total}"))
    summaries = {c: summarize(rates[c]) for c in candidates}
    seconds = {c: 1.0 / s["median"] for c, s in summaries.items()}
    costs = {
        "tuned": Costs(seconds["tier1", tuned_batch_sizes["tier1"]], seconds["tier2", tuned_batch_sizes["tier2"]], tuned_batch_sizes["tier1"], tuned_batch_sizes["tier2"]),
        "batch1": Costs(seconds["tier1", 1], seconds["tier2", 1], 1, 1),
    }
    report = {f"{name}@{size}": {**summary, "seconds_per_instance": seconds[name, size]} for (name, size), summary in summaries.items()}
    return costs, report


def load_labelled(path: str, config, num_classes: int):
    """The calibration data, with the columns cascade.json names, checked against the tiers' labels."""
    from .data import read_tsv

    try:
        data = read_tsv(path, config.text_columns, config.label_column)
    except FileNotFoundError:
        raise TangoEdgeError(f"calibration data {path} does not exist") from None
    except (OSError, ValueError, UnicodeDecodeError, StopIteration) as exc:
        raise TangoEdgeError(f"cannot read calibration data {path}: {exc}") from None
    if len(data.labels) < 2:
        raise TangoEdgeError(f"{path} holds {len(data.labels)} labelled rows; calibration needs more (a dev set)")
    gold = np.asarray(data.labels, dtype=np.int64)
    if gold.min() < 0 or gold.max() >= num_classes:
        raise TangoEdgeError(f"{path}: labels must be class indices 0..{num_classes - 1}; found {sorted(set(data.labels))[:10]}")
    return data.texts, gold


# ---- the command ---------------------------------------------------------------------------------------------


def temperature_decision(plain: Analysis, scaled: Analysis | None, target: float, binary: bool, fitted_nll: tuple[float, float] | None) -> tuple[Analysis, dict]:
    """Keep the fitted temperature only if the deferral rate needed at `target` is no higher than without it."""
    if scaled is None:
        return plain, {"fitted": None, "kept": False, "reason": "skipped (--no-temperature)"}
    with_t, without_t = scaled.cascade_choice(target), plain.cascade_choice(target)
    f_with = math.inf if with_t is None else with_t.deferral_rate
    f_without = math.inf if without_t is None else without_t.deferral_rate
    keep = f_with <= f_without
    same_ranking = rankings_agree(plain.confidence, scaled.confidence)
    why = (
        "binary task: T cannot change the confidence ranking (top probability = sigmoid(|margin| / T)), only the threshold's value"
        if binary
        else ("the confidence ranking is unchanged" if same_ranking else "the confidence ranking changed (possible with 3+ classes)")
    )
    at_edge = any(abs(math.log(scaled.temperature) - end) < 1e-3 for end in LOG_T_RANGE)
    report = {
        "fitted": scaled.temperature,
        "at_search_edge": at_edge,
        "nll_before": fitted_nll[0],
        "nll_after": fitted_nll[1],
        "deferral_with": None if with_t is None else f_with,
        "deferral_without": None if without_t is None else f_without,
        "ranking_unchanged": same_ranking,
        "kept": keep,
        "reason": why,
    }
    return (scaled if keep else plain), report


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


def _speedup_cell(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{entry['speedup']:.2f}x ({_percent(entry['deferral_rate'])})"


def _sizes_label(results: dict) -> str:
    return "tuned" if results["tuned_profile"] else "default"


def format_summary(results: dict) -> list[str]:
    """Headline lines: both tiers' metric, measured costs, the temperature decision and the chosen threshold."""
    m, sized = results["metric"], _sizes_label(results)
    lines = [
        f"{results['instances']} inputs from {results['data']}; metric {m}",
        f"tier 1 alone: {m} {results['tier1_metric']:.4f}    tier 2 alone: {m} {results['tier2_metric']:.4f}",
        f"batch sizes: {results['batch_sizes_from']}",
    ]
    for name, c in results["costs"].items():
        label = sized if name == "tuned" else "batch 1"
        lines.append(f"cost per instance, {label:7} (tier1 batch {c['tier1_batch_size']}, tier2 batch {c['tier2_batch_size']}): tier 1 {1e3 * c['tier1_seconds']:.3f} ms, tier 2 {1e3 * c['tier2_seconds']:.3f} ms")
    t = results["temperature"]
    if t["fitted"] is None:
        lines.append(f"temperature: {t['reason']}")
    else:
        edge = " (edge of the search range)" if t["at_search_edge"] else ""
        verdict = "kept" if t["kept"] else "dropped (T=1)"
        lines.append(
            f"temperature: fitted T={t['fitted']:.3f}{edge}, NLL {t['nll_before']:.4f} -> {t['nll_after']:.4f}; deferral at {results['target']:g}: "
            f"{_percent(t['deferral_with'])} with, {_percent(t['deferral_without'])} without -> {verdict}; {t['reason']}"
        )
    c = results["chosen"]
    lines.append(
        f"chosen: threshold {c['threshold']:.6g} at temperature {c['temperature']:.4g} defers {_percent(c['deferral_rate'])}, {m} {c['metric']:.4f} "
        f"(target {c['target']:g} x {results['tier2_metric']:.4f} = {c['required']:.4f}), speedup {c['speedup']:.2f}x, {c['throughput']:.0f}/s"
    )
    return lines


def format_table2(results: dict) -> list[str]:
    """Table 2: speedup (and deferral rate) of each routing at each target."""
    lines = [
        f"Table 2: speedup over tier 2 alone (deferral rate) at a share of tier 2's {results['metric']}, {_sizes_label(results)} batch sizes",
        f"{'target':>8} {'random':>18} {'cascade':>18} {'oracle':>18}",
    ]
    for target, row in results["table2"].items():
        lines.append(f"{100 * float(target):7.1f}% {_speedup_cell(row['random']):>18} {_speedup_cell(row['cascade']):>18} {_speedup_cell(row['oracle']):>18}")
    return lines


def format_table3(results: dict) -> list[str]:
    """Table 3: throughput of tier 2 alone and of the cascade at each target, at batch size 1 and tuned."""
    table, tuned = results["table3"], results["costs"]["tuned"]
    header = f"{_sizes_label(results)} ({tuned['tier1_batch_size']}/{tuned['tier2_batch_size']})"
    lines = ["Table 3: throughput (instances/s, tokenization included)", f"{'':16} {'batch size 1':>14} {header:>16}"]
    cell = lambda value: "n/a" if value is None else f"{value:.1f}"
    for key in table["tuned"]:
        label = "tier 2 alone" if key == "tier2_alone" else f"cascade @ {100 * float(key.split('_')[1]):.1f}%"
        lines.append(f"{label:16} {cell(table['batch1'][key]):>14} {cell(table['tuned'][key]):>16}")
    return lines


def format_report(results: dict) -> str:
    """The human-readable report: summary, then Tables 2 and 3."""
    return "\n".join([*format_summary(results), "", *format_table2(results), "", *format_table3(results)])


def write_choice(directory: Path, threshold: float, temperature: float, deferral_rate: float) -> Path:
    """Store threshold, temperature and deferral rate in cascade.json, keeping machine fields only if the file had them."""
    from .config import CASCADE_FILE, CascadeConfig
    from .profile import TUNED_FIELDS

    raw = json.loads((directory / CASCADE_FILE).read_text(encoding="utf-8"))
    config = CascadeConfig.load(directory).replace(threshold=threshold, temperature=temperature, deferral_rate=deferral_rate)
    return config.save(directory, keep_machine_fields=bool(set(raw) & set(TUNED_FIELDS)))


def calibrate_command(args) -> int:
    from .config import CascadeConfig
    from .profile import apply_profile
    from .tier import Tier

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
    tiers = {name: Tier(directory / name, max_length=config.max_length, device=args.device, streams=getattr(config, f"{name}_streams"), inference_precision=config.inference_precision, tokenizer=config.tokenizer) for name in ("tier1", "tier2")}
    labels = tiers["tier1"].labels
    if labels != tiers["tier2"].labels:
        raise TangoEdgeError(f"the tiers disagree on labels: tier1 {labels} vs tier2 {tiers['tier2'].labels}")
    num_classes = len(labels)
    if config.metric == "f1" and num_classes != 2:
        raise TangoEdgeError(f"metric f1 is binary F1 but the task has {num_classes} classes; set metric to accuracy or mcc in cascade.json")
    texts, gold = load_labelled(args.data, config, num_classes)

    batch = {"tier1": config.tier1_batch_size, "tier2": config.tier2_batch_size}
    logits = {}
    for name, tier in tiers.items():
        log(f"{name} logits on {len(texts)} inputs (batch size {batch[name]}) ...")
        logits[name] = tier.logits(tier.encoder.encode(texts), batch[name])
    log(f"timing each tier alone at batch sizes {batch['tier1']}/{batch['tier2']} and 1, {args.rounds} interleaved rounds ...")
    costs, cost_report = measure_costs(tiers, texts, batch, args.rounds)

    pred2 = tier2_predictions(logits["tier2"])
    plain = analyse(logits["tier1"], pred2, gold, config.metric, num_classes, 1.0)
    if plain.metric2 <= 0:
        raise TangoEdgeError(f"tier 2's {config.metric} on {args.data} is {plain.metric2:.4f}; a share of it is no target (check the labels and columns)")
    scaled, nlls = None, None
    if not args.no_temperature:
        fitted = fit_temperature(logits["tier1"], gold)
        scaled = analyse(logits["tier1"], pred2, gold, config.metric, num_classes, fitted)
        nlls = (nll(logits["tier1"], gold, 1.0), nll(logits["tier1"], gold, fitted))
    chosen_analysis, temperature_report = temperature_decision(plain, scaled, args.target, num_classes == 2, nlls)
    choice = chosen_analysis.cascade_choice(args.target)
    if choice is None:
        raise TangoEdgeError(f"no threshold reaches {args.target:g} x tier 2's {config.metric} ({plain.metric2:.4f}) on this data")

    targets = table_targets(args.target)
    results = {
        "data": str(args.data),
        "instances": len(gold),
        "labels": labels,
        "metric": config.metric,
        "target": args.target,
        "tier1_metric": chosen_analysis.metric1,
        "tier2_metric": chosen_analysis.metric2,
        "tuned_profile": note is None,
        "batch_sizes_from": "this machine's autotune profile" if note is None else "defaults (no valid profile; run `tango-edge autotune`)",
        "costs": {name: {"tier1_seconds": c.tier1, "tier2_seconds": c.tier2, "tier1_batch_size": c.tier1_batch_size, "tier2_batch_size": c.tier2_batch_size} for name, c in costs.items()},
        "timing": {"rounds": args.rounds, "settings": cost_report},
        "temperature": temperature_report,
        "chosen": {
            **asdict(choice),
            "temperature": chosen_analysis.temperature,
            "target": args.target,
            "required": chosen_analysis.required(args.target),
            "speedup": float(costs["tuned"].speedup(choice.deferral_rate)),
            "throughput": float(costs["tuned"].throughput(choice.deferral_rate)),
        },
        "table2": speedup_table(chosen_analysis, costs["tuned"], targets),
        "table3": throughput_table(chosen_analysis, costs, targets),
        "sweep": sweep_rows(chosen_analysis, costs),
        "deciles": fixes_by_confidence_decile(chosen_analysis.confidence, chosen_analysis.pred1, pred2, gold),
        "written": None,
    }
    if not args.no_write:
        results["written"] = str(write_choice(directory, choice.threshold, chosen_analysis.temperature, choice.deferral_rate))
        log(f"wrote threshold {choice.threshold:.6g} and temperature {chosen_analysis.temperature:.4g} to {results['written']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        log(f"results written to {args.json_out}")
    if args.plots:
        from .plots import save_figures

        for path in save_figures(results, Path(args.plots)):
            log(f"plot written to {path}")
    print(format_report(results))
    return 0
