"""The server's Prometheus metrics (prometheus-client), one registry per app so several apps can share a process."""

from __future__ import annotations

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """Counters and histograms named after what they count (TEI's te_* style)."""

    def __init__(self, num_tiers: int):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("te_request_count", "HTTP /predict requests by outcome", ["outcome"], registry=self.registry)
        self.inputs = Counter("te_input_count", "inputs classified", registry=self.registry)
        self.in_flight = Gauge("te_requests_in_flight", "/predict requests accepted and not answered", registry=self.registry)
        self.queue_size = Gauge("te_queue_size", "inputs accepted by the cascade and not answered", registry=self.registry)
        self.request_duration = Histogram("te_request_duration_seconds", "time from a /predict request's arrival to its answer", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_duration = Histogram("te_queue_duration_seconds", "time an input waits before its first-tier batch starts", buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference_duration = Histogram("te_inference_duration_seconds", "time of one batch on a tier", ["tier"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("te_batch_size", "inputs per batch on a tier", ["tier"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.answers = Counter("te_answers_count", "inputs answered by each tier", ["tier"], registry=self.registry)
        for tier in range(1, num_tiers + 1):  # every tier's series exist from the start, at 0
            self.answers.labels(str(tier))
            self.batch_size.labels(str(tier))
            self.inference_duration.labels(str(tier))

    def observe_batch(self, tier: int, size: int, answered: int, seconds: float, first_waits: list[float] | None) -> None:
        """The cascade's batch observer (called from OpenVINO callback threads)."""
        label = str(tier)
        self.inference_duration.labels(label).observe(seconds)
        self.batch_size.labels(label).observe(size)
        if answered:
            self.answers.labels(label).inc(answered)
        for wait in first_waits or ():
            self.queue_duration.observe(wait)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
