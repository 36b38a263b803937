"""Fast tokenization with the Rust `tokenizers` backend: encode once, pad per batch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TangoEdgeError

TOKENIZER_FILE = "tokenizer.json"


@dataclass(slots=True)
class Encoded:
    """One tokenized input, unpadded."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool

    def __len__(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Wraps tokenizer.json; `encode` handles single texts and (first, second) pairs.

    The `tokenizers` backend encodes a batch in Rust without the GIL: about 40 us per SST-2 sentence
    here, against 70-650 us for a transformers tokenizer call that also pads and builds tensors.
    """

    def __init__(self, path: str | Path, max_length: int):
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception for bad files
            raise TangoEdgeError(f"cannot load tokenizer {path}: {exc}") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        # Padding is off (we pad per batch), so read the pad id from the vocabulary.
        self.pad_id = next((i for i in map(self._tokenizer.token_to_id, ("[PAD]", "<pad>")) if i is not None), 0)
        self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest() + f":{max_length}"

    def encode(self, texts: list) -> list[Encoded]:
        encodings = self._tokenizer.encode_batch(texts)
        return [Encoded(e.ids, e.type_ids, bool(e.overflowing)) for e in encodings]


def pad_batch(batch: list[Encoded], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad a batch to its longest member: input_ids, attention_mask, token_type_ids (int64)."""
    width = max(len(e) for e in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    types = np.zeros((len(batch), width), dtype=np.int64)
    for row, enc in enumerate(batch):
        n = len(enc.ids)
        ids[row, :n] = enc.ids
        mask[row, :n] = 1
        types[row, :n] = enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
