"""Run statistics: raw counters and latency recorders (from the C++ core), summarised on demand."""

from __future__ import annotations

import threading

from ._native import LatencyRecorder, now_ns


class TierStats:
    """One tier's raw measurements: requests, the instances they held, the answers it gave, request times."""

    def __init__(self):
        self.batch_time = LatencyRecorder()  # per request: started -> finished
        self.reset()

    def reset(self) -> None:
        self.batches = self.items = self.answers = 0
        self.batch_time.reset()


class RunStats:
    """Fed by the runtime's callbacks from any thread; `summary()` turns the raw measurements into figures."""

    def __init__(self, num_tiers: int):
        self._lock = threading.Lock()
        self.latency = LatencyRecorder()  # per instance: accepted -> answered
        self.tiers = [TierStats() for _ in range(num_tiers)]
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.errors = self.truncated = 0
            self.first_ns: int | None = None
            self.last_ns: int | None = None
            for tier in self.tiers:
                tier.reset()
        self.latency.reset()

    def add_errors(self, count: int) -> None:
        with self._lock:
            self.errors += count

    def add_truncated(self, count: int) -> None:
        with self._lock:
            self.truncated += count

    def record_batch(self, tier: int, items: int, answers: int, elapsed_ns: int) -> None:
        """Tier `tier` (0-based) ran a request of `items` instances and answered `answers` of them."""
        stats = self.tiers[tier]
        stats.batch_time.record(elapsed_ns)
        with self._lock:
            stats.batches += 1
            stats.items += items
            stats.answers += answers

    def mark_started(self) -> None:
        with self._lock:
            if self.first_ns is None:
                self.first_ns = now_ns()

    def mark_answered(self, when_ns: int) -> None:
        with self._lock:
            if self.last_ns is None or when_ns > self.last_ns:
                self.last_ns = when_ns

    def summary(self, queue_waits: list[dict] | None = None) -> dict:
        """Counts, the share deferred past the first tier that ran, throughput, and per-tier figures.

        `deferred` counts the instances tier 1 did not answer (all of them when tier 1 was skipped), and
        `deferral_rate` is their share of the instances that entered the cascade; each tier's `reach_rate` is
        the share of those that reached it.
        """
        with self._lock:
            tiers = [(t.batches, t.items, t.answers) for t in self.tiers]
            errors, truncated = self.errors, self.truncated
            span_s = (self.last_ns - self.first_ns) / 1e9 if self.first_ns and self.last_ns else 0.0
        answered = sum(answers for _, _, answers in tiers)
        total = answered + errors
        first_items = next((items for _, items, _ in tiers if items), 0)  # entered the cascade
        deferred = first_items - tiers[0][2]
        waits = queue_waits or [{}] * len(tiers)
        return {
            "count": total,
            "answered": answered,
            "errors": errors,
            "truncated": truncated,
            "deferred": deferred,
            "deferral_rate": deferred / first_items if first_items else 0.0,
            "seconds": span_s,
            "throughput_per_s": answered / span_s if span_s > 0 else 0.0,
            "tiers": [
                {
                    "tier": index + 1,
                    "batches": batches,
                    "items": items,
                    "answers": answers,
                    "reach_rate": items / first_items if first_items else 0.0,
                    "mean_batch_size": items / batches if batches else 0.0,
                    "batch_time_ms": self.tiers[index].batch_time.summary(),
                    "queue_wait_ms": waits[index],
                }
                for index, (batches, items, answers) in enumerate(tiers)
            ],
            "latency_ms": self.latency.summary(),
        }
