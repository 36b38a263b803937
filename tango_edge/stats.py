"""Run statistics: raw counters and latency recorders (from the C++ core), summarised on demand."""

from __future__ import annotations

import threading

from ._core import LatencyRecorder, now_ns


class RunStats:
    """Fed by the runtime's callbacks from any thread; `summary()` turns the raw measurements into figures."""

    COUNTERS = ("tier1_answers", "tier2_answers", "errors", "truncated", "tier1_batches", "tier1_items", "tier2_batches", "tier2_items")

    def __init__(self):
        self._lock = threading.Lock()
        self.latency = LatencyRecorder()  # per instance: accepted -> answered
        self.tier1_batch_time = LatencyRecorder()  # per tier-1 request: started -> finished
        self.tier2_batch_time = LatencyRecorder()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.counts = dict.fromkeys(self.COUNTERS, 0)
            self.first_ns: int | None = None
            self.last_ns: int | None = None
        for recorder in (self.latency, self.tier1_batch_time, self.tier2_batch_time):
            recorder.reset()

    def add(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self.counts[name] += value

    def mark_started(self) -> None:
        with self._lock:
            if self.first_ns is None:
                self.first_ns = now_ns()

    def mark_answered(self, when_ns: int) -> None:
        with self._lock:
            if self.last_ns is None or when_ns > self.last_ns:
                self.last_ns = when_ns

    def summary(self, queue_wait: dict | None = None) -> dict:
        with self._lock:
            counts = dict(self.counts)
            span_s = (self.last_ns - self.first_ns) / 1e9 if self.first_ns and self.last_ns else 0.0
        answered = counts["tier1_answers"] + counts["tier2_answers"]
        total = answered + counts["errors"]
        deferred = counts["tier2_items"]
        return {
            "count": total,
            "answered": answered,
            "errors": counts["errors"],
            "truncated": counts["truncated"],
            "deferred": deferred,
            "deferral_rate": deferred / counts["tier1_items"] if counts["tier1_items"] else (1.0 if deferred else 0.0),
            "seconds": span_s,
            "throughput_per_s": answered / span_s if span_s > 0 else 0.0,
            "tier1": _tier_summary(counts["tier1_batches"], counts["tier1_items"], self.tier1_batch_time),
            "tier2": _tier_summary(counts["tier2_batches"], counts["tier2_items"], self.tier2_batch_time),
            "latency_ms": self.latency.summary(),
            "deferral_wait_ms": queue_wait or {},
        }


def _tier_summary(batches: int, items: int, recorder) -> dict:
    return {"batches": batches, "items": items, "mean_batch_size": items / batches if batches else 0.0, "batch_time_ms": recorder.summary()}
