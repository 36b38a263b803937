"""Temperature scaling (Guo et al. 2017; Schwartz et al. 2020), per tier: divide a tier's logits by T, fitted by
minimising the negative log-likelihood on the calibration data, so its confidences are calibrated and the
thresholds of different tiers mean the same thing.

T never changes a tier's answers (argmax). For two classes it cannot change which inputs a threshold defers
either: the top probability is sigmoid(|z1 - z0| / T), increasing in the margin |z1 - z0| for every T > 0, so
the confidence ranking, and with it the metric at each deferral rate, stays the same; only the threshold's
value moves (float32 ties at saturated confidences aside). With three or more classes the ranking can change,
and so can the speedup.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

LOG_T_RANGE = (-3.0, 3.0)  # temperature search interval, in log T


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


def at_search_edge(temperature: float, log_range: tuple[float, float] = LOG_T_RANGE) -> bool:
    return any(abs(math.log(temperature) - end) < 1e-3 for end in log_range)


def rankings_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """True when no pair of inputs is ordered one way by `a` and the other way by `b` (ties may differ)."""
    a, b = np.asarray(a), np.asarray(b)
    by_a = np.lexsort((b, a))
    by_b = np.lexsort((a, b))
    return bool(np.all(np.diff(b[by_a]) >= 0) and np.all(np.diff(a[by_b]) >= 0))
