"""Routing arithmetic, pure numpy: which inputs a cascade's thresholds defer, the metric that results, and the
thresholds that reach a target at the highest predicted throughput.

Two tiers: every routing studied is a *deferral order*: defer the first k inputs of some order to the last tier
and keep the first tier's answer for the rest. The cascade's order is "least confident first" (a threshold
defers the inputs below it); random routing uses random orders; the oracle defers first-tier errors first. For
any order, the confusion matrices for all k = 0..n come from one cumulative sum, so the metric at every
deferral rate costs O(n) and no threshold grid is ever guessed.

N tiers: an input is answered by the first tier whose confidence reaches its threshold, the last tier answers
the rest. The thresholds are searched on a grid of each tier's confidence quantiles (plus "skip this tier"),
scoring every combination; a combination's cost is the sum over tiers of the share of inputs that reach the
tier times its measured seconds per instance.

Throughput is predicted rather than measured per threshold: with t_k the measured seconds per instance of tier
k alone and s_k the share of inputs reaching it, a cascade costs sum_k s_k t_k per instance (t1 + f t2 for two
tiers), and its speedup over the last tier alone is t_N / that. Random and oracle routings are charged the same
formula, so they differ only in which inputs they defer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .metrics import confusion, confusion_metric_fn

SKIP_THRESHOLD = 2.0  # above any confidence: the runtime then skips the tier (it would defer everything)
RANDOM_DRAWS = 200  # random routings averaged when the expected metric has no closed form
RANDOM_SEED = 0
SEARCH_COMBINATIONS = 20_000  # threshold combinations scored per N-tier search (the grid shrinks as N grows)
MIN_GRID = 8
DECILES = 10


# ---- what the runtime computes -------------------------------------------------------------------------------


def tier_outputs(logits: np.ndarray, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) exactly as the runtime computes them: float32 softmax of logits / T.

    Using the runtime's arithmetic makes a threshold chosen here defer exactly the same inputs at run time.
    """
    from .tier import softmax

    probs = softmax(np.asarray(logits, dtype=np.float32) / np.float32(temperature))
    return probs.max(axis=1), probs.argmax(axis=1)


# ---- two tiers: routings as deferral orders ----------------------------------------------------------------------


def confusion_by_deferral(order: np.ndarray, pred1: np.ndarray, pred2: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[k] (k = 0..n): the confusion matrix when the first k inputs of `order` take the later tier's answer.

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
    """First-tier errors first, those the later tier fixes ahead of those it does not; then the first tier's
    correct answers, those the later tier keeps right ahead of those it would break."""
    wrong1, right2 = np.asarray(pred1) != np.asarray(gold), np.asarray(pred2) == np.asarray(gold)
    priority = np.select([wrong1 & right2, wrong1, right2], [0, 1, 2], default=3)
    return np.argsort(priority, kind="stable")


def oracle_metric_by_deferral(pred1, pred2, gold, metric: str, num_classes: int) -> np.ndarray:
    """The oracle's metric for a deferral budget of k = 0..n: it defers min(k, #first-tier errors) inputs."""
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
    none of these inputs), k = n a value above 1 (the tier is skipped).
    """
    s = np.asarray(sorted_confidence, dtype=np.float32)
    if k <= 0:
        return float(s[0])
    if k >= len(s):
        return SKIP_THRESHOLD
    lower, upper = s[k - 1], s[k]
    middle = np.float32((float(lower) + float(upper)) / 2)
    return float(upper) if middle <= lower else float(middle)


def threshold_for_rate(sorted_confidence: np.ndarray, rate: float) -> float:
    """A threshold deferring the least confident `rate` share of these inputs."""
    return threshold_for_cut(sorted_confidence, int(round(rate * len(sorted_confidence))))


@dataclass
class Curve:
    """The two-tier cascade's operating points: for each cut point, the count deferred, its threshold, the metric."""

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
    """The chosen two-tier operating point."""

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


@dataclass(frozen=True)
class Costs:
    """Measured seconds per instance of each tier alone, at the batch sizes they were measured with."""

    seconds: tuple[float, ...]
    batch_sizes: tuple[int, ...]

    def per_instance(self, reach) -> np.ndarray:
        """Seconds per instance of a cascade whose tiers see the shares `reach` (shape (..., N)) of the inputs."""
        return np.asarray(reach, dtype=np.float64) @ np.asarray(self.seconds, dtype=np.float64)

    def throughput(self, reach) -> np.ndarray:
        return 1.0 / self.per_instance(reach)

    def speedup(self, reach) -> np.ndarray:
        """The last tier alone's time over the cascade's."""
        return self.seconds[-1] / self.per_instance(reach)

    def pair(self, first: int = 0, last: int = -1) -> "Costs":
        """The costs of a two-tier cascade of two of these tiers."""
        return Costs((self.seconds[first], self.seconds[last]), (self.batch_sizes[first], self.batch_sizes[last]))


def two_tier_reach(deferral_rate) -> np.ndarray:
    """Reach shares (1, f) of a two-tier cascade deferring the share f."""
    f = np.asarray(deferral_rate, dtype=np.float64)
    return np.stack([np.ones_like(f), f], axis=-1)


# ---- N tiers -------------------------------------------------------------------------------------------------


def route(confidences: Sequence[np.ndarray], preds: Sequence[np.ndarray], thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runtime's rule on arrays: the first tier whose confidence is >= its threshold answers, the last tier
    answers the rest; a threshold above 1 skips its tier.

    Returns (final predictions, counts reaching each tier, counts passed on by each routing tier).
    """
    n = len(preds[0])
    final = np.asarray(preds[-1]).copy()
    open_ = np.ones(n, dtype=bool)
    reach = np.zeros(len(preds), dtype=np.int64)
    passed = np.zeros(len(thresholds), dtype=np.int64)
    for k, threshold in enumerate(thresholds):
        if threshold <= 1.0:
            reach[k] = open_.sum()
            answered = open_ & (np.asarray(confidences[k]) >= threshold)
            final[answered] = np.asarray(preds[k])[answered]
            open_ &= ~answered
        passed[k] = open_.sum()
    reach[-1] = open_.sum()
    return final, reach, passed


def threshold_grid(confidence: np.ndarray, points: int, allow_skip: bool) -> list[float]:
    """Thresholds at `points` deferral shares spread over [0, 1] of these confidences (each a cut point; all of
    them when there are fewer), plus SKIP_THRESHOLD when the tier may be skipped."""
    s = np.sort(np.asarray(confidence, dtype=np.float32), kind="stable")
    cuts = cut_points(s)
    if len(cuts) > points:
        cuts = np.unique(cuts[np.searchsorted(cuts, np.linspace(0, len(s), points)).clip(max=len(cuts) - 1)])
    grid = sorted({threshold_for_cut(s, int(k)) for k in cuts if k < len(s)})
    return grid + [SKIP_THRESHOLD] if allow_skip else grid


@dataclass
class Operating:
    """One operating point of an N-tier cascade."""

    thresholds: tuple[float, ...]
    reach: tuple[float, ...]  # share of inputs reaching each tier
    passed: tuple[float, ...]  # share of inputs each routing tier passed on (its deferral_rate in cascade.json)
    metric: float
    seconds: float  # predicted seconds per instance

    def speedup(self, costs: Costs) -> float:
        return costs.seconds[-1] / self.seconds


@dataclass
class Search:
    """Every operating point the search scored, as arrays: for combination c of the later tiers' thresholds
    (`later[c]`), the first tier deferring its `deferred[i]` least confident inputs."""

    later: list[tuple[float, ...]]
    combination: np.ndarray  # per point: index into `later`
    deferred: np.ndarray  # per point: inputs the first tier defers
    metric: np.ndarray
    seconds: np.ndarray
    sorted_confidence: np.ndarray  # the first tier's, ascending
    confidences: list
    preds: list
    n: int

    def point(self, index: int) -> Operating:
        thresholds = (threshold_for_cut(self.sorted_confidence, int(self.deferred[index])), *self.later[int(self.combination[index])])
        _, reach, passed = route(self.confidences, self.preds, thresholds)
        return Operating(tuple(float(t) for t in thresholds), tuple((reach / self.n).tolist()), tuple((passed / self.n).tolist()), float(self.metric[index]), float(self.seconds[index]))

    def best_meeting(self, required: float, mask: np.ndarray | None = None) -> Operating | None:
        """The cheapest point whose metric reaches `required` (ties: the higher metric), among `mask`."""
        ok = self.metric >= required - 1e-12
        if mask is not None:
            ok &= mask
        if not ok.any():
            return None
        candidates = np.flatnonzero(ok)
        best = candidates[np.lexsort((-self.metric[candidates], self.seconds[candidates]))[0]]
        return self.point(int(best))

    def frontier(self) -> list[Operating]:
        """Points no other point beats on both cost and metric, cheapest first."""
        order = np.lexsort((-self.metric, self.seconds))
        kept, best = [], -np.inf
        for index in order:
            if self.metric[index] > best + 1e-12:
                kept.append(int(index))
                best = self.metric[index]
        return [self.point(i) for i in kept]

    def skips_middle(self) -> np.ndarray:
        """Per point: True when every tier between the first and the last is skipped."""
        skipping = np.array([all(t > 1.0 for t in later) for later in self.later], dtype=bool)
        return skipping[self.combination]


def search_thresholds(confidences, preds, gold, metric: str, num_classes: int, costs: Costs, combinations: int = SEARCH_COMBINATIONS) -> Search:
    """Score the cascade at every first-tier cut point for each combination of the later tiers' thresholds.

    The later routing tiers (between the first and the last) take thresholds from a quantile grid plus "skip",
    so the two-tier cascade of the first and last tiers is among the points. For fixed later thresholds, every
    input the first tier defers gets a fixed later answer and cost, so all first-tier cut points are scored at
    once, exactly, by the cumulative sums of the two-tier analysis.
    """
    score = confusion_metric_fn(metric)
    gold = np.asarray(gold)
    n = len(gold)
    seconds = np.asarray(costs.seconds, dtype=np.float64)
    order = cascade_order(confidences[0])
    sorted_confidence = np.asarray(confidences[0])[order]
    cuts = cut_points(sorted_confidence)
    middle = len(preds) - 2
    points = max(MIN_GRID, int(round(combinations ** (1.0 / middle)))) if middle else 1
    grids = [threshold_grid(confidences[k], points, allow_skip=True) for k in range(1, len(preds) - 1)]
    later_list, combo, deferred, metric_values, cost_values = [], [], [], [], []
    for c, later in enumerate(itertools.product(*grids)):
        # Where each input ends if the first tier defers it, and what the later tiers cost it.
        final, _, _ = route(confidences[1:], preds[1:], later)
        later_cost = np.zeros(n)
        open_ = np.ones(n, dtype=bool)
        for k, threshold in enumerate(later, start=1):
            if threshold <= 1.0:
                later_cost[open_] += seconds[k]
                open_ &= ~(np.asarray(confidences[k]) >= threshold)
        later_cost[open_] += seconds[-1]
        by_k = score(confusion_by_deferral(order, preds[0], final, gold, num_classes))[cuts]
        cost_by_k = seconds[0] + np.concatenate([[0.0], np.cumsum(later_cost[order])])[cuts] / n
        cost_by_k[cuts == n] -= seconds[0]  # deferring everything is threshold_for_cut's skip: the first tier never runs
        later_list.append(tuple(float(t) for t in later))
        combo.append(np.full(len(cuts), c))
        deferred.append(cuts)
        metric_values.append(by_k)
        cost_values.append(cost_by_k)
    return Search(later_list, np.concatenate(combo), np.concatenate(deferred), np.concatenate(metric_values), np.concatenate(cost_values), sorted_confidence, list(confidences), list(preds), n)


# ---- Fig. 4 --------------------------------------------------------------------------------------------------


def fixes_by_confidence_decile(confidence, pred1, pred2, gold, bins: int = DECILES) -> dict:
    """Per first-tier confidence decile (equal counts, least confident first): its errors the later tier fixes
    ("fixed") and its correct answers the later tier gets wrong ("broken"), with each decile's confidence range."""
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


# ---- early exit (the DeeBERT baseline) -----------------------------------------------------------------------

EXIT_POINTS = 1000  # entropy thresholds scored per early-exit sweep (quantiles of the off-ramps' entropies)


@dataclass(frozen=True)
class ExitCurve:
    """An early-exit model's sweep over its entropy threshold S (an input exits at the first layer whose entropy
    is below S): the metric, the mean exit layer (1-based) and the predicted seconds per instance, the sum of the
    measured per-layer costs up to each input's exit layer."""

    thresholds: np.ndarray
    metric: np.ndarray
    mean_exit: np.ndarray
    seconds: np.ndarray

    def cheapest_meeting(self, required: float) -> int | None:
        """The index of the fastest threshold whose metric reaches `required`."""
        meeting = np.flatnonzero(self.metric >= required)
        return None if len(meeting) == 0 else int(meeting[np.argmin(self.seconds[meeting])])


def exit_layers(entropies: np.ndarray, threshold: float) -> np.ndarray:
    """Each input's exit layer (0-based) from its per-layer entropies (layers, inputs): the first below
    `threshold`, else the last."""
    below = entropies[:-1] < threshold
    if len(below) == 0:  # one layer: no off-ramp before it
        return np.zeros(entropies.shape[1], dtype=np.int64)
    return np.where(below.any(axis=0), below.argmax(axis=0), len(entropies) - 1)


def early_exit_curve(layer_logits: np.ndarray, entropies: np.ndarray, gold: np.ndarray, stage_seconds: Sequence[float], metric: str, num_classes: int, points: int = EXIT_POINTS) -> ExitCurve:
    """The sweep from 'never exit early' (S = 0) to 'every input exits at layer 1'. Thresholds sit halfway between
    neighbouring entropies, so a tiny numerical difference in a real run does not move an input across one."""
    ramps = np.unique(entropies[:-1].ravel())
    values = np.unique(np.quantile(ramps, np.linspace(0.0, 1.0, points))) if len(ramps) > points else ramps
    top = values[-1] + 1.0 if len(values) else 1.0  # above every entropy: everything exits at layer 1
    thresholds = np.unique(np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [top]]))
    score = confusion_metric_fn(metric)
    cumulative = np.cumsum(np.asarray(stage_seconds, dtype=np.float64))
    preds = layer_logits.argmax(axis=-1)  # (layers, inputs)
    columns = np.arange(layer_logits.shape[1])
    values, exits, seconds = [], [], []
    for threshold in thresholds:
        layer = exit_layers(entropies, threshold)
        values.append(float(score(confusion(gold, preds[layer, columns], num_classes))))
        exits.append(float(layer.mean() + 1))
        seconds.append(float(cumulative[layer].mean()))
    return ExitCurve(thresholds, np.asarray(values), np.asarray(exits), np.asarray(seconds))
