"""The callable class Ray Data runs in each actor: one Cascade, loaded once, classifying batch after batch."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ..cascade import Cascade, Prediction

# What the predictor adds to every batch; `error` is set (and label/score/tier are null) for a bad input.
RESULT_COLUMNS = {"label": pa.string(), "score": pa.float64(), "tier": pa.int32(), "error": pa.string(), "truncated": pa.bool_()}


class CascadePredictor:
    """For `Dataset.map_batches(CascadePredictor, fn_constructor_kwargs={"models": ...}, compute=ActorPoolStrategy(...))`.

    Args:
        models: the cascade folder, readable at this path on every node.
        text_column: the column holding the texts (str, or UTF-8 bytes as `read_lines` gives).
        pair_column: for a pair task, the column holding each pair's second text; without it a pair task's
            `text_column` holds tab-separated pairs, as in `tango-edge run`.
        threads: inference threads of this actor's cascade (0: all cores); `classify` passes the actor's CPUs.
        **cascade_kwargs: `Cascade.from_dir` keywords (thresholds=, batch_sizes=, ...).

    A batch (pyarrow Table, pandas DataFrame or dict of numpy arrays) comes back as a pyarrow Table with its
    columns and RESULT_COLUMNS, rows in the batch's order.
    """

    def __init__(self, models: str | Path, *, text_column: str = "text", pair_column: str | None = None, threads: int = 0, **cascade_kwargs):
        self.cascade = Cascade.from_dir(models, threads=threads, **cascade_kwargs)
        self.text_column = text_column
        self.pair_column = pair_column

    def __call__(self, batch) -> pa.Table:
        table = as_table(batch)
        texts = table.column(self.text_column).to_pylist()
        if self.pair_column is not None:
            texts = [(first, second) if first is not None and second is not None else None for first, second in zip(texts, table.column(self.pair_column).to_pylist())]
        predictions = self.cascade.predict(texts)
        for name, values in result_columns(predictions).items():
            column = pa.array(values, type=RESULT_COLUMNS[name])
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, column) if index >= 0 else table.append_column(name, column)
        return table

    def __del__(self):
        cascade = getattr(self, "cascade", None)
        if cascade is not None:
            cascade.close()


def result_columns(predictions: list[Prediction]) -> dict[str, list]:
    return {
        "label": [p.label for p in predictions],
        "score": [p.score for p in predictions],
        "tier": [p.tier for p in predictions],
        "error": [p.error for p in predictions],
        "truncated": [p.truncated for p in predictions],
    }


def prediction_from_row(row: dict) -> Prediction:
    """The Prediction a result row stands for (its JSON line is the one a local run writes)."""
    return Prediction(label=row["label"], score=row["score"], tier=row["tier"], error=row["error"], truncated=bool(row["truncated"]))


def as_table(batch) -> pa.Table:
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, dict):
        return pa.table({name: list(values) if getattr(values, "dtype", None) == object else values for name, values in batch.items()})
    return pa.Table.from_pandas(batch, preserve_index=False)
