"""Text files on Ray Data with each line's index, and the answers back in input order."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from ..cascade import Prediction
from ..config import CascadeConfig
from ..data import line_text
from ..errors import TangoEdgeError
from .pool import ActorPlan, classify, connect, plan_actors, require_ray
from .predictor import CascadePredictor, as_table, prediction_from_row

READ_TASKS = 2  # concurrent read tasks of read_lines


def plan_blocks(path: str | Path, lines_per_block: int) -> list[dict]:
    """Byte ranges of `lines_per_block` lines each, with the index of each range's first line (one pass)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise TangoEdgeError(f"cannot read input {path}: no such file")
    blocks, start, first, count, position = [], 0, 0, 0, 0
    with path.open("rb") as handle:
        for raw in handle:
            count += 1
            position += len(raw)
            if count == lines_per_block:
                blocks.append({"path": str(path), "start": start, "end": position, "first": first})
                start, first, count = position, first + count, 0
    if count:
        blocks.append({"path": str(path), "start": start, "end": position, "first": first})
    return blocks


def _read_block(ranges: pa.Table) -> pa.Table:
    indexes, texts = [], []
    for block in ranges.to_pylist():
        with open(block["path"], "rb") as handle:
            handle.seek(block["start"])
            data = handle.read(block["end"] - block["start"])
        lines = [line_text(raw) for raw in io.BytesIO(data)]
        indexes.extend(range(block["first"], block["first"] + len(lines)))
        texts.extend(lines)
    return pa.table({"index": pa.array(indexes, pa.int64()), "text": pa.array(texts, pa.binary())})


def read_lines(path: str | Path, lines_per_block: int = CascadeConfig.sort_window):
    """A Dataset of a text file's lines: `index` (0-based line number) and `text` (the line's bytes, without its
    end of line; decoding is per line in the cascade, so a line that is not UTF-8 gets an error, not a crash).

    The driver scans the file once for line offsets; read tasks, on any node, read their own byte ranges, so the
    file must be at this path on every node (always true on one machine; a shared filesystem on a cluster).
    """
    ray = require_ray()
    blocks = plan_blocks(path, lines_per_block)
    if not blocks:
        return ray.data.from_arrow(pa.table({"index": pa.array([], pa.int64()), "text": pa.array([], pa.binary())}))
    # I/O holds no core; a small pool, because every concurrent task is a Python worker process to start.
    return _ranges(blocks).map_batches(_read_block, batch_size=1, batch_format="pyarrow", num_cpus=0, compute=ray.data.TaskPoolStrategy(size=READ_TASKS))


def _ranges(blocks: list[dict]):
    return require_ray().data.from_items(blocks, override_num_blocks=len(blocks))


class LineRangePredictor(CascadePredictor):
    """CascadePredictor over byte ranges of a file (plan_blocks' rows): each actor reads its own lines, so a file
    run starts no read tasks and moves no text through Ray's object store."""

    def __call__(self, ranges) -> pa.Table:
        return super().__call__(_read_block(as_table(ranges))).drop_columns(["text"])  # the driver needs no texts back


def ordered_predictions(dataset, index_column: str = "index") -> Iterator[Prediction]:
    """The classified rows as Predictions in `index_column` order, each yielded as soon as all before it are.

    Ray hands blocks back as they finish; a small buffer restores the order. A row seen twice (a retried batch)
    is yielded once.
    """
    pending: dict[int, Prediction] = {}  # answered, not yet handed out
    next_index = 0
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            if row[index_column] >= next_index:  # below it: handed out already
                pending.setdefault(row[index_column], prediction_from_row(row))
        while next_index in pending:
            yield pending.pop(next_index)
            next_index += 1
    if pending:
        raise TangoEdgeError(f"Ray returned no answer for line {next_index + 1} (next answered: line {min(pending) + 1})")


def predict_file(path: str | Path, models: str | Path, *, plan: ActorPlan | None = None, lines_per_block: int | None = None, **cascade_kwargs) -> Iterator[Prediction]:
    """Every line of a text file (pair tasks: tab-separated), classified on the connected Ray cluster, in order.

    `lines_per_block` defaults to the cascade's sort window, so each actor sorts the same windows a local run
    does. Labels, tiers and errors are then the local run's; a later tier's batches still differ (a local
    stream mixes windows in them, an actor does not), and a different padded length moves INT8 scores
    (bench_ray: 17 of 100,000 lines, by at most 0.04).
    """
    if lines_per_block is None:
        lines_per_block = cascade_kwargs.get("sort_window") or CascadeConfig.load(Path(models)).sort_window
    blocks = plan_blocks(path, lines_per_block)
    if not blocks:
        return iter(())
    dataset = classify(_ranges(blocks), models, plan=plan, batch_size=1, predictor_class=LineRangePredictor, **cascade_kwargs)
    return ordered_predictions(dataset)


class FileRun:
    """One file classified on Ray, for the CLI and `classify_file`: connects (and later disconnects, if it
    connected), yields the Predictions in input order and tallies them for `summary()`."""

    def __init__(self, path: str | Path, models: str | Path, *, address: str | None = None, actors: int | None = None, cpus_per_actor: int | None = None, **cascade_kwargs):
        self.path = Path(path)
        if not self.path.is_file():
            raise TangoEdgeError(f"cannot read input {path}: no such file")
        self.models = Path(models)
        # A broken folder or override fails here, in one line, before Ray starts (in an actor it would be a
        # traceback per restart).
        CascadeConfig.load(self.models).replace(**{k: v for k, v in cascade_kwargs.items() if k != "device"}).validate()
        self.address = address
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.cascade_kwargs = cascade_kwargs
        self.plan: ActorPlan | None = None
        self.count = self.errors = self.truncated = 0
        self.answers: dict[int, int] = {}
        self._started = self._seconds = None
        self._connected = False

    def __enter__(self) -> "FileRun":
        self._connected = connect(self.address)
        try:
            self.plan = plan_actors(self.actors, self.cpus_per_actor)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._connected:
            require_ray().shutdown()

    def __iter__(self) -> Iterator[Prediction]:
        self._started = time.perf_counter()
        try:
            yield from self._tally(predict_file(self.path, self.models, plan=self.plan, **self.cascade_kwargs))
        except require_ray().exceptions.RayError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TangoEdgeError(f"the Ray run failed: {first_line}") from exc

    def _tally(self, predictions: Iterator[Prediction]) -> Iterator[Prediction]:
        for prediction in predictions:
            self.count += 1
            if prediction.error is not None:
                self.errors += 1
            else:
                self.answers[prediction.tier] = self.answers.get(prediction.tier, 0) + 1
            self.truncated += prediction.truncated
            self._seconds = time.perf_counter() - self._started
            yield prediction

    def summary(self) -> dict:
        seconds = self._seconds or 0.0
        return {
            "count": self.count,
            "errors": self.errors,
            "truncated": self.truncated,
            "answers_per_tier": {str(tier): n for tier, n in sorted(self.answers.items())},
            "seconds": round(seconds, 3),
            "throughput_per_s": round(self.count / seconds, 1) if seconds else 0.0,
            "actors": self.plan.actors if self.plan else None,
            "cpus_per_actor": self.plan.cpus_per_actor if self.plan else None,
            "address": self.address or "local",
        }


def classify_file(input_path: str | Path, output_path: str | Path, models: str | Path, **kwargs) -> dict:
    """Classify a text file on Ray (started locally, or the cluster at `address=`) into a JSONL file with one line
    per input line, in input order, as `tango-edge run` writes it. Keywords: FileRun's. Returns its summary."""
    with FileRun(input_path, models, **kwargs) as run, open(output_path, "w", encoding="utf-8") as out:
        for prediction in run:
            out.write(json.dumps(prediction.to_dict()) + "\n")
    return run.summary()
