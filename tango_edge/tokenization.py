"""Tokenization, once per input: tokenizer.json on the Rust `tokenizers` backend, or the same tokenizer
converted to an OpenVINO model (openvino-tokenizers) when the tier folder ships one. Padding is per batch.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TangoEdgeError, ov_message

TOKENIZER_FILE = "tokenizer.json"
OV_TOKENIZER_FILE = "openvino_tokenizer.xml"


@dataclass(slots=True)
class Encoded:
    """One tokenized input, unpadded. type_ids None means all zeros (single texts)."""

    ids: Sequence[int]
    type_ids: Sequence[int] | None
    truncated: bool

    def __len__(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Wraps tokenizer.json; `encode` handles single texts and (first, second) pairs.

    The `tokenizers` backend encodes a batch in Rust without the GIL: about 46 us per SST-2 sentence on
    2 cores here, against 70-650 us for a transformers tokenizer call that also pads and builds tensors.
    Given `ov_tokenizer` (the same tokenizer as an OpenVINO model), single texts go through it instead:
    about 15 us per sentence, the same ids (checked on all of SST-2).
    """

    def __init__(self, path: str | Path, max_length: int, ov_tokenizer: "OpenVINOTokenizer | None" = None):
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
        self.ov_tokenizer = ov_tokenizer

    def encode(self, texts: list) -> list[Encoded]:
        if self.ov_tokenizer is not None and all(isinstance(t, str) for t in texts):
            return [self._truncate(ids) for ids in self.ov_tokenizer.ids(texts)]
        encodings = self._tokenizer.encode_batch(texts)
        return [Encoded(e.ids, e.type_ids, bool(e.overflowing)) for e in encodings]

    def _truncate(self, ids: np.ndarray) -> Encoded:
        """The Rust tokenizer's truncation of one sequence: keep the first max_length - 1 ids and the last
        (the closing special token). The OpenVINO tokenizer is converted without truncation."""
        if len(ids) <= self.max_length:
            return Encoded(ids, None, False)
        return Encoded(np.concatenate([ids[: self.max_length - 1], ids[-1:]]), None, True)


class OpenVINOTokenizer:
    """A tokenizer compiled by OpenVINO (openvino_tokenizer.xml, made by openvino-tokenizers at export).

    Chunks of a call run on asynchronous requests across the CPU's streams; a lock keeps calls from
    several threads apart, since they share one request queue.
    """

    CHUNK = 64

    def __init__(self, path: Path, core):
        import openvino as ov

        try:
            compiled = core.compile_model(core.read_model(path), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
        except Exception as exc:
            raise TangoEdgeError(f"cannot load tokenizer {path}: {ov_message(exc)}") from None
        names = [{*port.get_names()} for port in compiled.outputs]
        try:
            self._ids_port = next(i for i, n in enumerate(names) if "input_ids" in n)
            self._mask_port = next(i for i, n in enumerate(names) if "attention_mask" in n)
        except StopIteration:
            raise TangoEdgeError(f"{path} does not output input_ids and attention_mask") from None
        self._queue = ov.AsyncInferQueue(compiled)
        self._queue.set_callback(self._done)
        self._lock = threading.Lock()

    def _done(self, request, slot) -> None:
        results, index = slot
        # Copies: the request's output memory is reused by its next chunk.
        results[index] = (request.get_output_tensor(self._ids_port).data.copy(), request.get_output_tensor(self._mask_port).data.copy())

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        """Unpadded, untruncated token ids (int64) of each text."""
        starts = range(0, len(texts), self.CHUNK)
        results: list = [None] * len(starts)
        with self._lock:
            for index, start in enumerate(starts):
                self._queue.start_async([np.array(texts[start : start + self.CHUNK])], (results, index))
            self._queue.wait_all()
        if any(r is None for r in results):
            raise TangoEdgeError("the OpenVINO tokenizer returned no result for a chunk of inputs")
        rows = []
        for ids, mask in results:
            rows.extend(ids[r, :n] for r, n in enumerate(mask.sum(axis=1).tolist()))
        return rows


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
        if enc.type_ids is not None:
            types[row, :n] = enc.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
