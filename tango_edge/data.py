"""Reading labelled TSV tasks (GLUE-style files) and plain text inputs."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

PAIR_SEPARATOR = "\t"  # a pair task's input line (and a distillation corpus line): first text, a tab, second text


def line_text(raw: bytes) -> bytes:
    """An input line without its end of line (LF or CRLF): what `tango-edge run` classifies for that line."""
    return raw.rstrip(b"\r\n")


# GLUE files use bare tabs and unescaped quotes (MRPC); default CSV quoting would merge rows.
csv.field_size_limit(1 << 24)


@dataclass
class LabelledTexts:
    """Texts (a str, or a (first, second) pair for pair tasks) with integer labels."""

    texts: list
    labels: list[int]


def read_tsv(
    path: str | Path,
    text_columns: Sequence[str] = ("sentence",),
    label_column: str = "label",
    limit: int | None = None,
) -> LabelledTexts:
    """Read a header-first TSV file into texts and labels.

    Raises:
        ValueError: a named column is missing or a label is not an integer.
    """
    path = Path(path)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        missing = [c for c in (*text_columns, label_column) if c not in header]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the header has {header}")
        text_idx = [header.index(c) for c in text_columns]
        label_idx = header.index(label_column)
        texts, labels = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                labels.append(int(row[label_idx]))
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{line_no}: label {row[label_idx:label_idx+1]} is not an integer") from None
            parts = [row[i].strip() for i in text_idx]
            texts.append(parts[0] if len(parts) == 1 else tuple(parts))
            if limit is not None and len(texts) >= limit:
                break
    return LabelledTexts(texts, labels)
