"""The FastAPI app: one Cascade per process, created in the lifespan and closed after the last request.

Handlers never block the event loop: /predict awaits `Cascade.predict_async`, so concurrent requests share the
cascade's batches (first tier: taken at once while idle, else gathered until full or `max_wait_ms`; later
tiers: gathered). Limits are checked at the edge, before any inference, and errors have TEI's shape.
"""

import json
import signal
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request  # no `from __future__ import annotations` here: FastAPI reads the handlers' annotations
from fastapi.responses import JSONResponse, Response

from .metrics import ServerMetrics
from .schema import RequestError, label_scores, parse_predict

TIER_HEADER = "x-tango-tier"  # which tier answered each input, comma-separated in input order (TEI clients ignore it)


@dataclass(frozen=True)
class ServerLimits:
    """The server's limits (flags of `tango-edge serve`), reported by /info."""

    max_concurrent_requests: int = 512  # /predict requests in flight; beyond it: 429
    max_client_batch_size: int = 32  # inputs per request; beyond it: 413
    payload_limit: int = 2_000_000  # bytes per request body; beyond it: 413


def create_app(models: str | Path, *, limits: ServerLimits = ServerLimits(), thresholds: Sequence[float] | None = None, max_wait_ms: float | None = None, device: str = "CPU"):
    """The app for a cascade folder. The cascade loads when the app starts (the lifespan), not here."""
    from .. import __version__
    from ..cascade import Cascade

    state: dict = {"cascade": None, "metrics": None, "in_flight": 0, "closing": False}

    @asynccontextmanager
    async def lifespan(app):
        cascade = Cascade.from_dir(models, thresholds=thresholds, max_wait_ms=max_wait_ms, device=device)
        metrics = ServerMetrics(len(cascade.tiers))
        cascade.batch_observer = metrics.observe_batch
        state.update(cascade=cascade, metrics=metrics)
        try:
            yield
        finally:  # uvicorn has answered every accepted request by now
            state["closing"] = True
            cascade.close()

    app = FastAPI(title="tango-edge", version=__version__, lifespan=lifespan)
    app.state.tango = state

    def error(exc: RequestError) -> JSONResponse:
        state["metrics"].requests.labels(exc.error_type).inc()
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.post("/predict")
    async def predict(request: Request):
        cascade, metrics = state["cascade"], state["metrics"]
        started = time.perf_counter()
        if state["in_flight"] >= limits.max_concurrent_requests:
            return error(RequestError(429, "overloaded", "Model is overloaded"))
        state["in_flight"] += 1
        metrics.in_flight.inc()
        try:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limits.payload_limit:
                return error(RequestError(413, "validation", f"payload of {declared} bytes > limit of {limits.payload_limit}"))
            body = await request.body()
            if len(body) > limits.payload_limit:
                return error(RequestError(413, "validation", f"payload of {len(body)} bytes > limit of {limits.payload_limit}"))
            if not body.strip():
                return error(RequestError(400, "validation", 'empty body: send a JSON object with "inputs"'))
            try:
                decoded = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return error(RequestError(400, "validation", f"malformed JSON: {exc}"))
            try:
                parsed = parse_predict(decoded, pair_task=cascade.pair_task, max_client_batch_size=limits.max_client_batch_size)
            except RequestError as exc:
                return error(exc)
            predictions = await cascade.predict_async(parsed.inputs)
            bad = next((p for p in predictions if p.error is not None), None)
            if bad is not None:
                return error(RequestError(422, "tokenizer", bad.error))
            if not parsed.truncate and any(p.truncated for p in predictions):
                return error(RequestError(413, "validation", f"an input is longer than the maximum of {cascade.config.max_length} tokens (truncate: false)"))
            answers = [label_scores(p, cascade.labels, parsed.raw_scores) for p in predictions]
            metrics.requests.labels("success").inc()
            metrics.inputs.inc(len(predictions))
            content = answers if parsed.batch else answers[0]
            return JSONResponse(content, headers={TIER_HEADER: ",".join(str(p.tier) for p in predictions)})
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()
            metrics.request_duration.observe(time.perf_counter() - started)

    @app.get("/health")
    async def health():
        cascade = state["cascade"]
        if cascade is None or state["closing"] or cascade.closed:
            return JSONResponse({"error": "unhealthy", "error_type": "unhealthy"}, status_code=503)
        return Response(status_code=200)

    @app.get("/info")
    async def info():
        cascade = state["cascade"]
        config = cascade.config
        return {
            "model_id": str(Path(models).resolve()),
            "model_type": {"classifier": {"id2label": dict(enumerate(cascade.labels)), "label2id": {l: i for i, l in enumerate(cascade.labels)}}},
            "task": config.task,
            "pair_task": cascade.pair_task,
            "tiers": [{"tier": k + 1, "dir": t.dir, "threshold": t.threshold, "batch_size": config.batch_size(k)} for k, t in enumerate(config.tiers)],
            "thresholds": config.thresholds,
            "max_input_length": config.max_length,
            "max_wait_ms": config.max_wait_ms,
            "max_concurrent_requests": limits.max_concurrent_requests,
            "max_client_batch_size": limits.max_client_batch_size,
            "payload_limit": limits.payload_limit,
            "version": __version__,
        }

    @app.get("/metrics")
    async def metrics():
        metrics, cascade = state["metrics"], state["cascade"]
        metrics.queue_size.set(cascade.pending())
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return app


def serve(models: str | Path, *, host: str, port: int, limits: ServerLimits, thresholds=None, max_wait_ms=None, device: str = "CPU", graceful_seconds: float = 30.0) -> None:
    """Run the app with uvicorn until SIGTERM/SIGINT: it stops accepting, answers what it accepted (the cascade
    stops waiting for batches to fill), then closes the cascade and returns."""
    import uvicorn

    app = create_app(models, limits=limits, thresholds=thresholds, max_wait_ms=max_wait_ms, device=device)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            cascade = app.state.tango["cascade"]
            if cascade is not None:
                app.state.tango["closing"] = True  # /health says 503 from now on
                cascade.drain()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_seconds, access_log=False)
    # uvicorn re-raises the signal it shut down for once it has restored the handlers it found: with these in
    # place, that re-raise is a no-op and the process exits 0 after its graceful shutdown.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        DrainingServer(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
