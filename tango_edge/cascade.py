"""The two-tier runtime: tier 1 on asynchronous infer requests, low-confidence inputs deferred to batched tier 2.

Flow of one input: tokenize (once, when both tiers share a tokenizer) -> a length-sorted tier-1 batch on an
AsyncInferQueue -> the completion callback answers it, or pushes its id into the C++ DeferralQueue -> a
tier-2 worker thread pops full (or due) batches and runs them on tier 2's own AsyncInferQueue -> the answer goes
to the caller's sink, which restores input order (streams) or completes a Future (online requests).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ._core import DeferralQueue, now_ns
from .config import CascadeConfig
from .errors import TangoEdgeError
from .stats import RunStats
from .tier import Tier, softmax
from .tokenization import Encoded

log = logging.getLogger("tango_edge")

# Deferred ids the queue holds at most. Far above what the streams keep in flight, so a tier-1 callback
# (an OpenVINO thread) never blocks on it; online bursts beyond it wait in push (backpressure).
DEFERRAL_CAPACITY = 1 << 16


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for one input. `tier` is 1 or 2; on a bad input, label/score/tier are None and `error` says why."""

    label: str | None
    score: float | None
    tier: int | None
    error: str | None = None
    truncated: bool = False

    def to_dict(self) -> dict:
        out = {"label": self.label, "score": None if self.score is None else round(self.score, 6), "tier": self.tier}
        if self.truncated:
            out["truncated"] = True
        if self.error is not None:
            out["error"] = self.error
        return out


def check_text(item) -> tuple[object | None, str | None]:
    """(text, None) for a usable input, else (None, why). Bytes must be UTF-8; pairs are (str, str)."""
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"invalid UTF-8 at byte {exc.start}"
    if isinstance(item, str):
        return (item, None) if item.strip() else (None, "empty input")
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item):
        return (item, None) if all(part.strip() for part in item) else (None, "empty input")
    return None, f"expected a string, got {type(item).__name__}"


@dataclass(slots=True)
class _Instance:
    sink: "_Sink"
    index: int
    encoded: Encoded  # tier-1 tokens (shared with tier 2 when the tokenizers agree)
    text: object  # kept only when tier 2 needs its own tokenization
    started_ns: int


class _Sink:
    """Where answers go. `deliver` is called from OpenVINO callback threads."""

    wait_us = 0  # deferral deadline for this sink's inputs; 0 = wait for a full batch (or a flush)

    def deliver(self, answers: list[tuple[int, Prediction]]) -> None:
        raise NotImplementedError

    def tier1_done(self) -> None:
        pass


class _FutureSink(_Sink):
    def __init__(self, future: Future, wait_us: int):
        self.future = future
        self.wait_us = wait_us

    def deliver(self, answers):
        for _, prediction in answers:
            if not self.future.done():
                self.future.set_result(prediction)


class _OrderedSink(_Sink):
    """Collects answers by input index and hands them back as a contiguous, in-order prefix."""

    def __init__(self):
        self.cond = threading.Condition()
        self.done: dict[int, Prediction] = {}
        self.next_index = 0  # first index not yet handed back
        self.accepted = 0  # indices given out
        self.tier1_pending = 0  # tier-1 requests started and not finished

    def deliver(self, answers):
        with self.cond:
            self.done.update(answers)
            self.cond.notify_all()

    def tier1_started(self) -> None:
        with self.cond:
            self.tier1_pending += 1

    def tier1_done(self) -> None:
        with self.cond:
            self.tier1_pending -= 1
            self.cond.notify_all()

    def take_ready(self) -> list[Prediction]:
        with self.cond:
            ready = []
            while self.next_index in self.done:
                ready.append(self.done.pop(self.next_index))
                self.next_index += 1
            return ready

    @property
    def outstanding(self) -> int:
        return self.accepted - self.next_index

    def wait(self, timeout: float) -> None:
        with self.cond:
            if self.next_index not in self.done:
                self.cond.wait(timeout)


class PredictionStream:
    """Iterator over answers in input order; reads its input lazily, in bounded memory.

    `finished()` returns, without waiting, the answers that are complete and next in order: after an
    interruption, it is what can still be written out.
    """

    def __init__(self, cascade: "Cascade", items: Iterable):
        self._cascade = cascade
        self._items = iter(items)
        self._sink = _OrderedSink()
        self._out: deque[Prediction] = deque()
        self._exhausted = False
        window = cascade.config.sort_window
        self._max_in_flight = 4 * max(window, cascade.config.tier2_batch_size)

    def __iter__(self) -> "PredictionStream":
        return self

    def __next__(self) -> Prediction:
        while not self._out:
            if self._exhausted and self._sink.outstanding == 0:
                raise StopIteration
            self._advance()
        return self._out.popleft()

    def _advance(self) -> None:
        sink = self._sink
        if not self._exhausted and sink.outstanding < self._max_in_flight:
            window = list(itertools.islice(self._items, self._cascade.config.sort_window))
            if window:
                self._cascade._start(window, sink)
            else:
                self._exhausted = True
        else:
            # Nothing more to read (or too much in flight): once tier 1 has seen all of it, release the
            # deferred inputs still waiting for a full tier-2 batch.
            if sink.tier1_pending == 0:
                self._cascade._deferrals.flush()
            sink.wait(0.05)
        self._out.extend(sink.take_ready())

    def finished(self) -> list[Prediction]:
        self._out.extend(self._sink.take_ready())
        ready = list(self._out)
        self._out.clear()
        return ready


class Cascade:
    """A two-tier cascade on OpenVINO. Safe to share between threads.

    Use `Cascade.from_dir(path)`; `predict`, `predict_iter` and `submit` all run on the same asynchronous
    pipeline. Close it (or use it as a context manager) to stop the tier-2 worker.
    """

    def __init__(self, tier1: Tier, tier2: Tier, config: CascadeConfig, *, directory: Path | None = None, profile_note: str | None = None):
        if tier1.labels != tier2.labels:
            raise TangoEdgeError(f"the tiers disagree on labels: tier1 {tier1.labels} vs tier2 {tier2.labels}")
        self.tier1, self.tier2 = tier1, tier2
        self.config = config.validate()
        self.directory = directory
        self.profile_note = profile_note
        self.labels = tier1.labels
        self.shared_tokenizer = tier1.encoder.fingerprint == tier2.encoder.fingerprint
        self.uses_tier1 = config.threshold <= 1.0
        self.uses_tier2 = config.threshold > 0.0
        self._stats = RunStats()
        self._instances: dict[int, _Instance] = {}
        self._ids = itertools.count()
        self._tier1_lock = threading.Lock()  # producers in several threads share one AsyncInferQueue
        self._deferrals = DeferralQueue(DEFERRAL_CAPACITY, config.tier2_batch_size, int(config.max_wait_ms * 1000))
        # Compile up front, so a bad model fails here and not inside a worker.
        self._tier1_requests = tier1.request_queue(self._on_tier1_done) if self.uses_tier1 else None
        self._tier2_requests = tier2.request_queue(self._on_tier2_done) if self.uses_tier2 else None
        self._closed = False
        self._worker = threading.Thread(target=self._tier2_loop, name="tango-edge-tier2", daemon=True)
        self._worker.start()

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        *,
        threshold: float | None = None,
        tier1_batch_size: int | None = None,
        tier2_batch_size: int | None = None,
        max_wait_ms: float | None = None,
        device: str = "CPU",
        use_profile: bool = True,
        **overrides,
    ) -> "Cascade":
        """Load a cascade folder (tier1/, tier2/, cascade.json).

        The threshold comes from cascade.json and batch sizes from this machine's autotune profile, unless
        given here. Raises TangoEdgeError for a missing or broken folder.
        """
        from .profile import apply_profile

        directory = Path(path)
        if not directory.is_dir():
            raise TangoEdgeError(f"model folder {directory} does not exist")
        config = CascadeConfig.load(directory)
        note = None
        if use_profile:
            config, note = apply_profile(config, directory, device)
        config = config.replace(threshold=threshold, tier1_batch_size=tier1_batch_size, tier2_batch_size=tier2_batch_size, max_wait_ms=max_wait_ms, **overrides)
        tiers = [
            Tier(directory / name, max_length=config.max_length, device=device, streams=streams, inference_precision=config.inference_precision, tokenizer=config.tokenizer)
            for name, streams in (("tier1", config.tier1_streams), ("tier2", config.tier2_streams))
        ]
        return cls(*tiers, config, directory=directory, profile_note=note)

    # ---- public API -------------------------------------------------------------------------------

    def predict(self, texts: Iterable) -> list[Prediction]:
        """Answers for all texts, in input order."""
        return list(self.predict_iter(texts))

    def predict_iter(self, texts: Iterable) -> PredictionStream:
        """Stream answers in input order while reading `texts` lazily (bounded memory)."""
        self._check_open()
        return PredictionStream(self, texts)

    def submit(self, text) -> Future:
        """Start one online request; the Future resolves to its Prediction.

        A deferred request waits at most `max_wait_ms` for its tier-2 batch to fill.
        """
        self._check_open()
        future: Future = Future()
        self._start([text], _FutureSink(future, max(1, int(self.config.max_wait_ms * 1000))))
        return future

    def stats(self) -> dict:
        """Run statistics since creation or the last `reset_stats()`."""
        summary = self._stats.summary(self._deferrals.wait_summary())
        summary["threshold"] = self.config.threshold
        summary["tier1_batch_size"] = self.config.tier1_batch_size
        summary["tier2_batch_size"] = self.config.tier2_batch_size
        return summary

    def reset_stats(self) -> None:
        self._stats.reset()
        self._deferrals.reset_wait_summary()  # deferral_wait_ms is part of the stats too

    def close(self) -> None:
        """Finish what is queued and stop the tier-2 worker."""
        if self._closed:
            return
        self._closed = True
        if self._tier1_requests is not None:
            self._tier1_requests.wait_all()
        self._deferrals.close()
        self._worker.join()
        if self._tier2_requests is not None:
            self._tier2_requests.wait_all()

    def __enter__(self) -> "Cascade":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """Models, inputs and settings in use (for `tango-edge info`)."""
        return {
            "directory": str(self.directory) if self.directory else None,
            "labels": self.labels,
            "shared_tokenizer": self.shared_tokenizer,
            "config": asdict(self.config),
            "profile": self.profile_note or "tuned profile in use",
            "tiers": {
                name: {
                    "folder": str(tier.folder),
                    "inputs": tier.input_names,
                    "tokenizer": tier.encoder.backend,
                    "streams": tier.streams or "auto",
                    "model_size_mb": round((tier.folder / "openvino_model.bin").stat().st_size / 1e6, 2),
                }
                for name, tier in (("tier1", self.tier1), ("tier2", self.tier2))
            },
        }

    # ---- pipeline ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TangoEdgeError("this Cascade is closed")

    def _start(self, items: list, sink: _Sink) -> None:
        """Accept a window of inputs: answer bad ones at once, tokenize the rest, start tier-1 batches."""
        self._check_open()  # a stream made before close() must raise, not wait forever for a closed queue
        base = getattr(sink, "accepted", 0)
        if isinstance(sink, _OrderedSink):
            sink.accepted += len(items)
        texts, indices, failures = [], [], []
        for offset, item in enumerate(items):
            text, error = check_text(item)
            if error is None:
                texts.append(text)
                indices.append(base + offset)
            else:
                failures.append((base + offset, Prediction(None, None, None, error=error)))
        if failures:
            self._stats.add(errors=len(failures))
            sink.deliver(failures)
        if not texts:
            return
        self._stats.mark_started()
        encoded = self.tier1.encoder.encode(texts)
        started = now_ns()
        keep_text = not self.shared_tokenizer
        ids = []
        for k, enc in enumerate(encoded):
            iid = next(self._ids)
            self._instances[iid] = _Instance(sink, indices[k], enc, texts[k] if keep_text else None, started)
            ids.append(iid)
        truncated = sum(enc.truncated for enc in encoded)
        if truncated:
            self._stats.add(truncated=truncated)
        order = sorted(range(len(ids)), key=lambda k: len(encoded[k]))
        if not self.uses_tier1:  # threshold above 1: everything goes to tier 2, in length order to cut padding
            self._defer([ids[k] for k in order], sink)
            return
        size = self.config.tier1_batch_size
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            inputs = self.tier1.inputs([encoded[k] for k in rows])
            if isinstance(sink, _OrderedSink):
                sink.tier1_started()
            with self._tier1_lock:
                self._tier1_requests.start_async(inputs, ([ids[k] for k in rows], sink, now_ns()))

    def _on_tier1_done(self, request, userdata) -> None:
        ids, sink, started = userdata
        try:
            finished = now_ns()
            self._stats.tier1_batch_time.record(finished - started)
            self._stats.add(tier1_batches=1, tier1_items=len(ids))
            logits = request.get_output_tensor(0).data
            probs = softmax(logits / self.config.temperature)
            confidence = probs.max(axis=1)
            keep = confidence >= self.config.threshold
            answer_ids = [iid for iid, k in zip(ids, keep) if k]
            if answer_ids:
                labels = probs.argmax(axis=1)[keep]
                self._answer(answer_ids, labels, confidence[keep], 1, finished)
            deferred = [iid for iid, k in zip(ids, keep) if not k]
            if deferred:
                self._defer(deferred, sink)
        except BaseException as exc:  # never leave a caller waiting on a lost batch
            self._fail(ids, exc)
        finally:
            sink.tier1_done()

    def _tier2_loop(self) -> None:
        while True:
            batch = self._deferrals.pop_batch()
            if batch is None:
                continue
            if not batch:  # closed and drained
                return
            try:
                instances = [self._instances[iid] for iid in batch]
                if self.shared_tokenizer:
                    encoded = [inst.encoded for inst in instances]
                else:
                    encoded = self.tier2.encoder.encode([inst.text for inst in instances])
                self._tier2_requests.start_async(self.tier2.inputs(encoded), (batch, now_ns()))  # only this thread submits
            except BaseException as exc:
                self._fail(batch, exc)

    def _on_tier2_done(self, request, userdata) -> None:
        ids, started = userdata
        try:
            finished = now_ns()
            self._stats.tier2_batch_time.record(finished - started)
            self._stats.add(tier2_batches=1, tier2_items=len(ids))
            probs = softmax(request.get_output_tensor(0).data)
            self._answer(ids, probs.argmax(axis=1), probs.max(axis=1), 2, finished)
        except BaseException as exc:
            self._fail(ids, exc)

    def _answer(self, ids: list[int], labels: np.ndarray, scores: np.ndarray, tier: int, finished: int) -> None:
        by_sink: dict[int, tuple[_Sink, list]] = {}
        latencies = []
        for iid, label, score in zip(ids, labels.tolist(), scores.tolist()):
            inst = self._instances.pop(iid)
            latencies.append(finished - inst.started_ns)
            entry = by_sink.setdefault(id(inst.sink), (inst.sink, []))
            entry[1].append((inst.index, Prediction(self.labels[label], score, tier, truncated=inst.encoded.truncated)))
        self._stats.latency.record_many(latencies)
        self._stats.add(**{f"tier{tier}_answers": len(ids)})
        self._stats.mark_answered(finished)
        for sink, answers in by_sink.values():
            sink.deliver(answers)

    def _defer(self, ids: list[int], sink: _Sink) -> None:
        """Queue ids for tier 2; once the queue is closed (close() raced this request), answer them with an error."""
        if not self._deferrals.push_many(ids, sink.wait_us):
            self._fail(ids, None, "this Cascade is closed")

    def _fail(self, ids: list[int], exc: BaseException | None, message: str | None = None) -> None:
        if exc is not None:
            log.error("tango-edge: inference failed for %d inputs: %r", len(ids), exc)
        message = message or f"inference failed: {exc}"
        for iid in ids:
            inst = self._instances.pop(iid, None)
            if inst is not None:
                inst.sink.deliver([(inst.index, Prediction(None, None, None, error=message))])
        self._stats.add(errors=len(ids))
