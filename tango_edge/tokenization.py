"""Tokenization, once per input: tokenizer.json on the Rust `tokenizers` backend, or the same tokenizer
converted to an OpenVINO model (openvino-tokenizers) when the tier folder ships one; for BERT's uncased
WordPiece, the C++ core's tokenizer takes the plain-ASCII texts first. Padding is per batch.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import threading
import weakref
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


CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class TokenizerSpec:
    """What the runtime and the scripts need to know of a tokenizer, read from its files, not guessed from names.

    pad_id: from the model's config.json (`pad_token_id`), else tokenizer.json's padding, else 0.
    special_ids: every special added token's id.
    single_bounds: (first, last) ids of a single text's template when it is exactly one special token, the
        text, one special token (BERT's [CLS] A [SEP], RoBERTa's and MPNet's <s> A </s>); else None.
    """

    pad_id: int
    special_ids: frozenset[int]
    single_bounds: tuple[int, int] | None


def read_spec(tokenizer_json: dict, model_config: dict | None = None) -> TokenizerSpec:
    """The TokenizerSpec of a parsed tokenizer.json and (optionally) the model's parsed config.json."""
    pad_id = (model_config or {}).get("pad_token_id")
    if not isinstance(pad_id, int):
        pad_id = (tokenizer_json.get("padding") or {}).get("pad_id")
    if not isinstance(pad_id, int):
        pad_id = 0
    specials = frozenset(t["id"] for t in tokenizer_json.get("added_tokens") or [] if t.get("special"))
    return TokenizerSpec(pad_id, specials, _single_bounds(tokenizer_json.get("post_processor") or {}))


def read_spec_files(folder: str | Path) -> TokenizerSpec:
    """read_spec of a folder's tokenizer.json and config.json (the latter optional)."""
    folder = Path(folder)
    config_path = folder / CONFIG_FILE
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    return read_spec(json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8")), config)


def _single_bounds(post: dict) -> tuple[int, int] | None:
    """(first id, last id) of a post-processor that makes <special> text <special> of a single text, else None."""
    kind = post.get("type")
    if kind == "Sequence":  # e.g. ByteLevel then a template: the template decides the specials
        found = [b for b in map(_single_bounds, post.get("processors") or []) if b is not None]
        return found[0] if len(found) == 1 else None
    if kind in ("BertProcessing", "RobertaProcessing"):
        return post["cls"][1], post["sep"][1]
    if kind != "TemplateProcessing":
        return None
    single = post.get("single") or []
    shape = [next(iter(piece)) for piece in single]
    if shape != ["SpecialToken", "Sequence", "SpecialToken"]:
        return None
    ids = [post["special_tokens"].get(single[k]["SpecialToken"]["id"], {}).get("ids") for k in (0, 2)]
    if not all(i is not None and len(i) == 1 for i in ids):
        return None
    return ids[0][0], ids[1][0]


class TextEncoder:
    """Wraps tokenizer.json; `encode` handles single texts and (first, second) pairs.

    The `tokenizers` backend encodes a batch in Rust without the GIL: about 46 us per SST-2 sentence on
    2 cores here, against 70-650 us for a transformers tokenizer call that also pads and builds tensors.
    Given `ov_tokenizer` (the same tokenizer as an OpenVINO model), single texts go through it instead:
    about 15 us per sentence, the same ids (checked on all of SST-2). With `native`, a tokenizer.json that is
    an uncased WordPiece (BERT's, MPNet's) sends plain-ASCII single texts to the C++ core first (see
    native_wordpiece). Padding is never the tokenizer's (MPNet's tokenizer.json pads to 128): batches are
    padded to their longest member.
    """

    def __init__(self, path: str | Path, max_length: int, ov_tokenizer: "OpenVINOTokenizer | None" = None, native: bool = False):
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
            spec_json = json.loads(path.read_bytes())
        except Exception as exc:  # the Rust side raises a bare Exception for bad files
            raise TangoEdgeError(f"cannot load tokenizer {path}: {exc}") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        config_path = path.parent / CONFIG_FILE
        try:
            model_config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
        except ValueError as exc:
            raise TangoEdgeError(f"{config_path} is not valid JSON ({exc})") from None
        self.spec = read_spec(spec_json, model_config)
        self.pad_id = self.spec.pad_id
        # Two tiers share tokens only when the tokenizer, its truncation and its padding agree.
        self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest() + f":{max_length}:{self.pad_id}"
        # The OpenVINO tokenizer is converted without truncation; _truncate re-applies it for a one-special-each-side template.
        self.ov_tokenizer = ov_tokenizer if self.spec.single_bounds is not None else None
        self.native = native_wordpiece(spec_json, self.spec) if native else None

    @property
    def backend(self) -> str:
        """What tokenizes single texts: "native+openvino", "native+rust", "openvino" or "rust"."""
        full = "openvino" if self.ov_tokenizer is not None else "rust"
        return f"native+{full}" if self.native is not None else full

    def encode(self, texts: list) -> list[Encoded]:
        if not all(isinstance(t, str) for t in texts):  # pairs
            return self._encode_rust(texts)
        if self.native is None:
            return self._encode_full(texts)
        ids, offsets, refused = self.native.encode_batch(texts if isinstance(texts, list) else list(texts))
        bounds = offsets.tolist()
        encoded = [self._truncate(ids[bounds[i] : bounds[i + 1]]) for i in range(len(texts))]
        if len(refused):  # non-ASCII, control characters, added tokens written out: the full tokenizer
            rows = refused.tolist()
            for row, enc in zip(rows, self._encode_full([texts[i] for i in rows])):
                encoded[row] = enc
        return encoded

    def _encode_full(self, texts: list[str]) -> list[Encoded]:
        if self.ov_tokenizer is not None:
            return [self._truncate(ids) for ids in self.ov_tokenizer.ids(texts)]
        return self._encode_rust(texts)

    def _encode_rust(self, texts: list) -> list[Encoded]:
        return [Encoded(e.ids, e.type_ids if any(e.type_ids) else None, bool(e.overflowing)) for e in self._tokenizer.encode_batch(texts)]

    def _truncate(self, ids: np.ndarray) -> Encoded:
        """The Rust tokenizer's truncation of one single text: keep the first max_length - 1 ids and the last
        (the closing special token)."""
        if len(ids) <= self.max_length:
            return Encoded(ids, None, False)
        return Encoded(np.concatenate([ids[: self.max_length - 1], ids[-1:]]), None, True)


def native_wordpiece(spec_json: dict, spec: TokenizerSpec):
    """The C++ core's WordPiece for a tokenizer.json that is an uncased WordPiece pipeline (BertNormalizer with
    lowercasing, BertPreTokenizer, WordPiece, one special token each side of a single text), else None.

    That covers BERT uncased and MPNet (the same vocabulary behind four added tokens, <s> text </s>). It
    tokenizes plain-ASCII texts with the same ids, and refuses the rest, which the full tokenizer then takes.
    With it, tier 1 alone ran at 13,217/s against 10,238/s on the OpenVINO tokenizer in one run of
    scripts/bench_engine.py on SST-2 dev here (docs/sst2/v1/bench_engine.txt).
    """
    from ._native import WordPiece

    normalizer, model = spec_json.get("normalizer") or {}, spec_json.get("model") or {}
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("lowercase") or not normalizer.get("clean_text"):
        return None
    if (spec_json.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece":
        return None
    vocab = model.get("vocab") or {}
    if sorted(vocab.values()) != list(range(len(vocab))):
        return None
    if spec.single_bounds is None or model.get("unk_token") not in vocab:
        return None
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    added = [t["content"] for t in spec_json.get("added_tokens") or []]
    return WordPiece(tokens, vocab[model["unk_token"]], *spec.single_bounds, model.get("continuing_subword_prefix", "##"), model.get("max_input_chars_per_word", 100), added)


# Live OpenVINO tokenizers, whose request queues are released at exit while the interpreter still runs:
# an AsyncInferQueue destroyed during interpreter finalization can abort the process ("terminate called without
# an active exception", seen in a build's quantize step; openvino PR 37485 fixes the destructor).
_LIVE_TOKENIZERS: "weakref.WeakSet[OpenVINOTokenizer]" = weakref.WeakSet()


@atexit.register
def _release_tokenizer_queues() -> None:
    for tokenizer in list(_LIVE_TOKENIZERS):
        tokenizer.close()


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
        ids_port, mask_port = self._ids_port, self._mask_port

        def done(request, slot) -> None:
            results, index = slot
            # Copies: the request's output memory is reused by its next chunk.
            results[index] = (request.get_output_tensor(ids_port).data.copy(), request.get_output_tensor(mask_port).data.copy())

        # The callback holds no reference to self: no cycle, so the queue goes as soon as the tokenizer does.
        self._queue = ov.AsyncInferQueue(compiled)
        self._queue.set_callback(done)
        self._lock = threading.Lock()
        _LIVE_TOKENIZERS.add(self)

    def close(self) -> None:
        """Finish running chunks and release the request queue (idempotent)."""
        with self._lock:
            if self._queue is not None:
                self._queue.wait_all()
                self._queue = None

    def ids(self, texts: list[str]) -> list[np.ndarray]:
        """Unpadded, untruncated token ids (int64) of each text."""
        starts = range(0, len(texts), self.CHUNK)
        results: list = [None] * len(starts)
        with self._lock:
            if self._queue is None:
                raise TangoEdgeError("the OpenVINO tokenizer is closed")
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
