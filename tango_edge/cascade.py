"""The runtime: a cascade of N >= 2 tiers, each a stage on its own OpenVINO AsyncInferQueue.

Flow of one input: tokenize (once per distinct tokenizer) -> the first stage: length-sorted batches from a
stream's window, or online requests gathered by the stage's DeferralQueue (full batch or `max_wait_ms`) ->
one completion handler for every stage: softmax(logits / T), answer when the confidence reaches the stage's
threshold, else push the id into the next stage's C++ DeferralQueue -> that stage's worker thread pops full
(or due, or flushed) batches and starts them on its own AsyncInferQueue -> ... -> the last stage answers
everything that reaches it. Answers go to the caller's sink, which restores input order (streams) or
completes a Future (online requests).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ._native import DeferralQueue, now_ns
from .config import CascadeConfig
from .data import PAIR_SEPARATOR
from .errors import TangoEdgeError
from .stats import RunStats
from .tier import Tier, softmax
from .tokenization import Encoded

log = logging.getLogger("tango_edge")

# Ids a stage's queue holds at most. Far above what the streams keep in flight, so a completion callback
# (an OpenVINO thread) never blocks on it; online bursts beyond it wait in push (backpressure).
QUEUE_CAPACITY = 1 << 16


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer for one input. `tier` is 1..N; on a bad input, label/score/tier are None and `error` says why.

    `probabilities` (every label's, in label order) and `logits` are the answering tier's, for callers that
    want more than the top label (the HTTP server's /predict answers with every label).
    """

    label: str | None
    score: float | None
    tier: int | None
    error: str | None = None
    truncated: bool = False
    probabilities: tuple[float, ...] | None = field(default=None, compare=False, repr=False)
    logits: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        out = {"label": self.label, "score": None if self.score is None else round(self.score, 6), "tier": self.tier}
        if self.truncated:
            out["truncated"] = True
        if self.error is not None:
            out["error"] = self.error
        return out


def check_text(item, pair_task: bool = False) -> tuple[object | None, str | None]:
    """(text, None) for a usable input, else (None, why).

    Bytes must be UTF-8. A single-text task takes a string; a pair task takes a (first, second) tuple or a
    string holding exactly one tab between the two texts.
    """
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, f"invalid UTF-8 at byte {exc.start}"
    if pair_task and isinstance(item, str):
        parts = item.split(PAIR_SEPARATOR)
        if len(parts) != 2:
            return None, f"expected two texts separated by one tab, found {len(parts) - 1} tabs"
        item = tuple(parts)
    if isinstance(item, list) and len(item) == 2:
        item = tuple(item)
    if isinstance(item, str):
        if pair_task:
            return None, "expected a pair of texts"
        return (item, None) if item.strip() else (None, "empty input")
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(part, str) for part in item):
        if not pair_task:
            return None, "this task classifies single texts, not pairs"
        return (item, None) if all(part.strip() for part in item) else (None, "empty input")
    return None, f"expected a string, got {type(item).__name__}"


@dataclass(slots=True)
class _Instance:
    sink: "_Sink"
    index: int
    text: object
    encoded: Encoded  # tokens of the tokenizer named by `fingerprint`
    fingerprint: str
    started_ns: int


class _Sink:
    """Where answers go. `deliver` is called from OpenVINO callback threads; `moved` from the runtime."""

    wait_us = 0  # batching deadline for this sink's inputs at every stage; 0 = wait for a full batch (or a flush)

    def deliver(self, answers: list[tuple[int, Prediction]]) -> None:
        raise NotImplementedError

    def moved(self, from_stage: int | None, to_stage: int | None, count: int) -> None:
        """`count` of this sink's inputs left stage `from_stage` (None: new) for `to_stage` (None: answered)."""


class _FutureSink(_Sink):
    """Online requests: one Future for a group of inputs, resolved with their Predictions in input order."""

    def __init__(self, future: Future, count: int, wait_us: int, single: bool):
        self.future = future
        self.wait_us = wait_us
        self.single = single
        self._answers: list[Prediction | None] = [None] * count
        self._left = count
        self._resolved = False
        self._lock = threading.Lock()

    def deliver(self, answers):
        with self._lock:
            for index, prediction in answers:
                if self._answers[index] is None:
                    self._answers[index] = prediction
                    self._left -= 1
            done = self._left == 0 and not self._resolved
            self._resolved |= done  # only one call resolves the Future
        if done:
            try:
                self.future.set_result(self._answers[0] if self.single else list(self._answers))
            except InvalidStateError:  # the caller cancelled it
                pass


class _OrderedSink(_Sink):
    """Collects answers by input index and hands them back as a contiguous, in-order prefix.

    It counts its inputs at each stage, so a stream knows when no earlier stage can add to a later stage's
    partial batch and releases it (flush) instead of waiting for inputs that will not come.
    """

    def __init__(self, stages: int):
        self.cond = threading.Condition()
        self.done: dict[int, Prediction] = {}
        self.next_index = 0  # first index not yet handed back
        self.accepted = 0  # indices given out
        self.at_stage = [0] * stages  # inputs queued or running at each stage

    def deliver(self, answers):
        with self.cond:
            self.done.update(answers)
            self.cond.notify_all()

    def moved(self, from_stage, to_stage, count):
        with self.cond:
            if to_stage is not None:
                self.at_stage[to_stage] += count
            if from_stage is not None:
                self.at_stage[from_stage] -= count
            self.cond.notify_all()

    def stages_to_flush(self) -> list[int]:
        """Later stages holding this sink's inputs while no earlier stage does."""
        with self.cond:
            flush = []
            for stage in range(1, len(self.at_stage)):
                if any(self.at_stage[:stage]):
                    break
                if self.at_stage[stage]:
                    flush.append(stage)
            return flush

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
        self._sink = _OrderedSink(len(cascade.stages))
        self._out: deque[Prediction] = deque()
        self._exhausted = False
        window = cascade.config.sort_window
        self._max_in_flight = 4 * max(window, *cascade.config.batch_sizes)

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
                self._cascade._start_window(window, sink)
            else:
                self._exhausted = True
        else:
            # Nothing more to read (or too much in flight): release the partial batches that nothing
            # earlier can fill any more.
            for stage in sink.stages_to_flush():
                self._cascade.stages[stage].queue.flush()
            sink.wait(0.05)
        self._out.extend(sink.take_ready())

    def finished(self) -> list[Prediction]:
        self._out.extend(self._sink.take_ready())
        ready = list(self._out)
        self._out.clear()
        return ready


@dataclass(eq=False)
class Stage:
    """One running tier: its model, routing rule and batch size, the queue that feeds it and its worker.

    `position` is its index among the running stages, `tier_index` its index in the cascade folder (a tier
    skipped by a threshold above 1 runs no stage). `threshold` None: it answers everything that reaches it.
    """

    position: int
    tier_index: int
    tier: Tier
    threshold: float | None
    temperature: float
    batch_size: int
    queue: DeferralQueue
    requests: object = None  # openvino.AsyncInferQueue
    worker: threading.Thread | None = None
    submit_lock: threading.Lock = field(default_factory=threading.Lock)  # streams and the worker share `requests`
    eager: bool = True  # while no request of the stage runs, release online inputs at once
    in_flight: int = 0  # requests started and not finished
    flight_lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, requests) -> None:
        self.requests = requests
        self.queue.set_eager(self.eager)  # nothing runs yet

    draining: bool = False  # shutting down: release everything at once, never wait for a batch to fill

    def submit(self, inputs: dict, userdata) -> None:
        """Start a request. While none of an eager stage's requests runs, its queue releases online inputs at
        once (continuous batching); while one runs, they gather into a batch until it is full or due."""
        with self.submit_lock:
            with self.flight_lock:
                self.in_flight += 1
                self.queue.set_eager(self.draining)
            try:
                self.requests.start_async(inputs, userdata)
            except BaseException:
                self.finished()  # never started: no callback will say it finished
                raise

    def finished(self) -> None:
        with self.flight_lock:
            self.in_flight -= 1
            if self.in_flight == 0 or self.draining:
                self.queue.set_eager(self.eager or self.draining)

    def drain(self) -> None:
        with self.flight_lock:
            self.draining = True
            self.queue.set_eager(True)
        self.queue.flush()


def running_tiers(thresholds: Sequence[float | None]) -> list[int]:
    """Indices of the tiers that run: a tier with a threshold above 1 is skipped (it would defer everything),
    and one with threshold 0 answers everything, so none after it runs. The last tier always answers."""
    running = []
    for index, threshold in enumerate(thresholds):
        last = index == len(thresholds) - 1
        if not last and threshold > 1.0:
            continue
        running.append(index)
        if last or threshold <= 0.0:
            break
    return running


class Cascade:
    """A cascade of N >= 2 tiers on OpenVINO. Safe to share between threads.

    Use `Cascade.from_dir(path)`; `predict`, `predict_iter`, `submit`, `submit_many` and `predict_async` all
    run on the same asynchronous pipeline. Close it (or use it as a context manager) to stop the workers.
    """

    def __init__(self, tiers: Sequence[Tier], config: CascadeConfig, *, directory: Path | None = None, profile_note: str | None = None):
        self.config = config.validate()
        if len(tiers) != config.num_tiers:
            raise TangoEdgeError(f"{len(tiers)} tier models for a config of {config.num_tiers} tiers")
        for tier, tier_config in zip(tiers[1:], config.tiers[1:]):
            if tier.labels != tiers[0].labels:
                raise TangoEdgeError(f"the tiers disagree on labels: {config.tiers[0].dir} {tiers[0].labels} vs {tier_config.dir} {tier.labels}")
        self.tiers = list(tiers)
        self.directory = directory
        self.profile_note = profile_note
        self.labels = tiers[0].labels
        self.pair_task = config.is_pair_task
        self._stats = RunStats(config.num_tiers)
        self._instances: dict[int, _Instance] = {}
        self._ids = itertools.count()
        wait_us = int(config.max_wait_ms * 1000)
        self._online_wait_us = max(1, wait_us)  # online inputs always have a deadline (0 would mean "until flushed")
        self.stages: list[Stage] = []
        running = running_tiers([t.threshold for t in config.tiers])
        for position, index in enumerate(running):
            tier_config = config.tiers[index]
            last = position == len(running) - 1
            self.stages.append(Stage(position, index, tiers[index], None if last else tier_config.threshold, tier_config.temperature, config.batch_size(index), DeferralQueue(QUEUE_CAPACITY, config.batch_size(index), wait_us)))
        # Compile up front, so a bad model fails here and not inside a worker.
        for stage in self.stages:
            # Only the first stage takes online inputs as they come: a later stage's batches are the deferred
            # few, and on two cores its small eager batches slowed every tier (bench_online: 64 clients at
            # 0.33-0.39x of predict() with eager later stages, 0.37-0.46x without, one run each).
            stage.eager = stage.position == 0
            stage.start(stage.tier.request_queue(self._on_batch_done))
        # Called after every batch with (tier, inputs, answered, seconds, first-tier queue waits or None), from
        # OpenVINO callback threads: the HTTP server's metrics hook. None: no call.
        self.batch_observer = None
        self._closed = False
        for stage in self.stages:
            stage.worker = threading.Thread(target=self._stage_loop, args=(stage,), name=f"tango-edge-tier{stage.tier_index + 1}", daemon=True)
            stage.worker.start()

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        *,
        threshold: float | None = None,
        thresholds: Sequence[float] | None = None,
        batch_sizes: Sequence[int] | None = None,
        max_wait_ms: float | None = None,
        device: str = "CPU",
        threads: int = 0,
        use_profile: bool = True,
        **overrides,
    ) -> "Cascade":
        """Load a cascade folder (cascade.json and one folder per tier).

        Thresholds come from cascade.json and batch sizes from this machine's autotune profile, unless given
        here: `threshold` sets the first tier's, `thresholds` every tier's but the last. `threads` caps every
        tier's inference threads (0: all cores; for processes that share a machine). Other keywords
        override CascadeConfig fields (`sort_window`, `tokenizer`, `streams=[...]`, `temperatures=[...]`).
        Raises TangoEdgeError for a missing or broken folder.
        """
        from .profile import apply_profile

        directory = Path(path)
        if not directory.is_dir():
            raise TangoEdgeError(f"model folder {directory} does not exist")
        config = CascadeConfig.load(directory)
        note = None
        if use_profile:
            config, note = apply_profile(config, directory, device)
        config = config.replace(threshold=threshold, thresholds=thresholds, batch_sizes=batch_sizes, max_wait_ms=max_wait_ms, **overrides)
        tiers = [Tier(directory / t.dir, max_length=config.max_length, device=device, streams=t.streams, threads=threads, inference_precision=config.inference_precision, tokenizer=config.tokenizer) for t in config.tiers]
        return cls(tiers, config, directory=directory, profile_note=note)

    # ---- public API -------------------------------------------------------------------------------

    def predict(self, texts: Iterable) -> list[Prediction]:
        """Answers for all texts, in input order."""
        return list(self.predict_iter(texts))

    def predict_iter(self, texts: Iterable) -> PredictionStream:
        """Stream answers in input order while reading `texts` lazily (bounded memory)."""
        self._check_open()
        return PredictionStream(self, texts)

    def submit(self, text) -> Future:
        """Queue one online request; the Future resolves to its Prediction.

        Concurrent requests share batches: at every stage an input waits at most `max_wait_ms` for its
        batch to fill.
        """
        return self._submit([text], single=True)

    def submit_many(self, texts: Sequence) -> Future:
        """Queue a group of online inputs; the Future resolves to their Predictions, in input order."""
        return self._submit(list(texts), single=False)

    async def predict_async(self, texts: Sequence) -> list[Prediction]:
        """`submit_many` for asyncio code: awaits the answers without blocking the event loop."""
        return await asyncio.wrap_future(self.submit_many(texts))

    def stats(self) -> dict:
        """Run statistics since creation or the last `reset_stats()`."""
        waits = [{} for _ in self.tiers]
        for stage in self.stages:
            waits[stage.tier_index] = stage.queue.wait_summary()
        summary = self._stats.summary(waits)
        summary["thresholds"] = self.config.thresholds
        summary["threshold"] = self.config.tiers[0].threshold
        summary["batch_sizes"] = self.config.batch_sizes
        return summary

    def drain(self) -> None:
        """Stop waiting for batches to fill: every input queued now or deferred later goes on at once (a server
        shutting down answers what it accepted without waiting for max_wait_ms)."""
        for stage in self.stages:
            stage.drain()

    def pending(self) -> int:
        """Inputs accepted and not answered yet."""
        return len(self._instances)

    @property
    def closed(self) -> bool:
        return self._closed

    def reset_stats(self) -> None:
        self._stats.reset()
        for stage in self.stages:
            stage.queue.reset_wait_summary()  # queue waits are part of the stats too

    def close(self) -> None:
        """Finish what is queued, stage after stage, and stop the workers."""
        if self._closed:
            return
        self._closed = True
        for stage in self.stages:  # each stage drains into the next before that one is closed
            stage.queue.close()
            stage.worker.join()
            stage.requests.wait_all()

    def __enter__(self) -> "Cascade":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """Models, inputs and settings in use (for `tango-edge info`)."""
        running = {stage.tier_index for stage in self.stages}
        return {
            "directory": str(self.directory) if self.directory else None,
            "labels": self.labels,
            "pair_task": self.pair_task,
            "config": self.config.to_dict(keep_machine_fields=True),
            "profile": self.profile_note or "tuned profile in use",
            "tiers": [
                {
                    "tier": index + 1,
                    "folder": str(tier.folder),
                    "threshold": self.config.tiers[index].threshold,
                    "temperature": self.config.tiers[index].temperature,
                    "batch_size": self.config.batch_size(index),
                    "runs": index in running,
                    "inputs": tier.input_names,
                    "tokenizer": tier.encoder.backend,
                    "shares_tokens_with_previous": index > 0 and tier.encoder.fingerprint == self.tiers[index - 1].encoder.fingerprint,
                    "streams": tier.streams or "auto",
                    "model_size_mb": round((tier.folder / "openvino_model.bin").stat().st_size / 1e6, 2),
                }
                for index, tier in enumerate(self.tiers)
            ],
        }

    # ---- intake -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise TangoEdgeError("this Cascade is closed")

    def _accept(self, items: list, sink: _Sink, base: int) -> list[int]:
        """Answer bad inputs at once; tokenize the rest for the first stage. Returns the new instance ids."""
        self._check_open()  # a stream made before close() must raise, not wait forever for a closed queue
        texts, indices, failures = [], [], []
        for offset, item in enumerate(items):
            text, error = check_text(item, self.pair_task)
            if error is None:
                texts.append(text)
                indices.append(base + offset)
            else:
                failures.append((base + offset, Prediction(None, None, None, error=error)))
        if failures:
            self._stats.add_errors(len(failures))
            sink.deliver(failures)
        if not texts:
            return []
        self._stats.mark_started()
        encoder = self.stages[0].tier.encoder
        encoded = encoder.encode(texts)
        started = now_ns()
        ids = []
        for k, enc in enumerate(encoded):
            iid = next(self._ids)
            self._instances[iid] = _Instance(sink, indices[k], texts[k], enc, encoder.fingerprint, started)
            ids.append(iid)
        return ids

    def _start_window(self, items: list, sink: _OrderedSink) -> None:
        """A stream's window: length-sorted batches started on the first stage directly."""
        base = sink.accepted
        sink.accepted += len(items)
        ids = self._accept(items, sink, base)
        if not ids:
            return
        ids.sort(key=lambda iid: len(self._instances[iid].encoded))
        stage = self.stages[0]
        sink.moved(None, 0, len(ids))
        for start in range(0, len(ids), stage.batch_size):
            self._run(stage, ids[start : start + stage.batch_size])

    def _submit(self, items: list, single: bool) -> Future:
        self._check_open()
        future: Future = Future()
        sink = _FutureSink(future, len(items), self._online_wait_us, single)
        if not items:
            future.set_result([])
            return future
        ids = self._accept(items, sink, 0)
        if ids:
            self._push(self.stages[0], ids, sink)
        return future

    # ---- stages -----------------------------------------------------------------------------------

    def _push(self, stage: Stage, ids: list[int], sink: _Sink) -> None:
        """Queue ids for a stage; once the queue is closed (close() raced this request), answer them with an error."""
        if not stage.queue.push_many(ids, sink.wait_us):
            self._fail(ids, None, "this Cascade is closed", stage.position)

    def _stage_loop(self, stage: Stage) -> None:
        while True:
            batch = stage.queue.pop_batch()
            if batch is None:
                continue
            if not batch:  # closed and drained
                return
            self._run(stage, batch)

    def _run(self, stage: Stage, ids: list[int]) -> None:
        """Start one request of `stage` on these instances (tokenizing them for it if its tokenizer differs)."""
        try:
            instances = [self._instances[iid] for iid in ids]
            encoder = stage.tier.encoder
            stale = [inst for inst in instances if inst.fingerprint != encoder.fingerprint]
            if stale:
                for inst, enc in zip(stale, encoder.encode([inst.text for inst in stale])):
                    inst.encoded, inst.fingerprint = enc, encoder.fingerprint
            stage.submit(stage.tier.inputs([inst.encoded for inst in instances]), (stage, ids, now_ns()))
        except BaseException as exc:
            self._fail(ids, exc, None, stage.position)

    def _on_batch_done(self, request, userdata) -> None:
        """The one completion handler: answer the confident inputs, pass the others to the next stage."""
        stage, ids, started = userdata
        try:
            finished = now_ns()
            logits = request.get_output_tensor(0).data
            probs = softmax(logits / stage.temperature)  # float32, exactly as calibrate computes it
            confidence = probs.max(axis=1)
            labels = probs.argmax(axis=1)
            if stage.threshold is None:
                keep = np.ones(len(ids), dtype=bool)
            else:
                keep = confidence >= stage.threshold
            answered = int(keep.sum())
            self._stats.record_batch(stage.tier_index, len(ids), answered, finished - started)
            observer = self.batch_observer
            if observer is not None:
                waits = [(started - self._instances[iid].started_ns) / 1e9 for iid in ids] if stage.position == 0 else None
                observer(stage.tier_index + 1, len(ids), answered, (finished - started) / 1e9, waits)
            if answered:
                self._answer([iid for iid, k in zip(ids, keep) if k], labels[keep], confidence[keep], probs[keep], logits[keep], stage, finished)
            if answered < len(ids):
                self._defer([iid for iid, k in zip(ids, keep) if not k], stage)
        except BaseException as exc:  # never leave a caller waiting on a lost batch
            self._fail(ids, exc, None, stage.position)
        finally:
            stage.finished()

    def _answer(self, ids: list[int], labels: np.ndarray, scores: np.ndarray, probs: np.ndarray, logits: np.ndarray, stage: Stage, finished: int) -> None:
        by_sink: dict[int, tuple[_Sink, list]] = {}
        latencies, truncated = [], 0
        for iid, label, score, row, raw in zip(ids, labels.tolist(), scores.tolist(), probs.tolist(), logits.tolist()):
            inst = self._instances.pop(iid)
            latencies.append(finished - inst.started_ns)
            truncated += bool(inst.encoded.truncated)  # by the answering tier's tokenizer
            entry = by_sink.setdefault(id(inst.sink), (inst.sink, []))
            entry[1].append((inst.index, Prediction(self.labels[label], score, stage.tier_index + 1, truncated=bool(inst.encoded.truncated), probabilities=tuple(row), logits=tuple(raw))))
        self._stats.latency.record_many(latencies)
        if truncated:
            self._stats.add_truncated(truncated)
        self._stats.mark_answered(finished)
        for sink, answers in by_sink.values():
            sink.deliver(answers)
            sink.moved(stage.position, None, len(answers))

    def _defer(self, ids: list[int], stage: Stage) -> None:
        """Pass ids on to the next stage's queue, grouped by sink (each sink has its own deadline)."""
        following = self.stages[stage.position + 1]
        by_sink: dict[int, tuple[_Sink, list]] = {}
        for iid in ids:
            sink = self._instances[iid].sink
            by_sink.setdefault(id(sink), (sink, []))[1].append(iid)
        for sink, group in by_sink.values():
            sink.moved(None, following.position, len(group))  # counted there before it leaves here: no flush sees a gap
            self._push(following, group, sink)
            sink.moved(stage.position, None, len(group))

    def _fail(self, ids: list[int], exc: BaseException | None, message: str | None, position: int) -> None:
        if exc is not None:
            log.error("tango-edge: inference failed for %d inputs: %r", len(ids), exc)
        message = message or f"inference failed: {exc}"
        failed = 0
        for iid in ids:
            inst = self._instances.pop(iid, None)
            if inst is not None:
                failed += 1
                inst.sink.deliver([(inst.index, Prediction(None, None, None, error=message))])
                inst.sink.moved(position, None, 1)
        self._stats.add_errors(failed)
