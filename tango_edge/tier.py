"""One classifier tier: an OpenVINO IR with its tokenizer and labels, compiled once for throughput."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import TangoEdgeError, ov_message
from .tokenization import OV_TOKENIZER_FILE, TOKENIZER_FILE, Encoded, OpenVINOTokenizer, TextEncoder, pad_batch

MODEL_XML = "openvino_model.xml"
MODEL_BIN = "openvino_model.bin"

_core = None
_core_lock = threading.Lock()


def ov_core():
    """The process-wide openvino.Core (one per process, as optimum-intel does)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino as ov

            try:  # registers the tokenizer operations with the Core made next (openvino_tokenizer.xml)
                import openvino_tokenizers  # noqa: F401
            except ImportError:
                pass
            _core = ov.Core()
        return _core


def read_labels(folder: Path) -> list[str]:
    """Labels in class-index order from a transformers-style config.json (`id2label`)."""
    path = folder / "config.json"
    try:
        id2label = json.loads(path.read_text(encoding="utf-8"))["id2label"]
        return [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
    except FileNotFoundError:
        raise TangoEdgeError(f"{path} is missing: each tier folder needs a config.json with id2label") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TangoEdgeError(f"{path}: cannot read id2label ({exc!r})") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Tier:
    """A tier folder (openvino_model.xml/.bin, tokenizer.json, config.json), compiled lazily.

    Args:
        folder: the tier folder.
        max_length: truncation length for its tokenizer.
        device: OpenVINO device name.
        streams: NUM_STREAMS, 0 for the THROUGHPUT hint's own choice.
        threads: INFERENCE_NUM_THREADS, 0 for all of the machine's cores; set it when processes share a machine
            (Ray actors), so they do not oversubscribe the cores. Streams are capped at the threads.
        inference_precision: precision of the ops left in floating point ("f32" keeps FP32 results
            exact; on AMX CPUs OpenVINO would otherwise run them in bf16).
        tokenizer: "openvino" to tokenize with the folder's openvino_tokenizer.xml when it has one (and
            openvino-tokenizers is installed), "rust" for tokenizer.json; "native" is "openvino" with the C++
            core's WordPiece first for the plain-ASCII texts of a BERT uncased tokenizer.
    """

    def __init__(self, folder: str | Path, *, max_length: int, device: str = "CPU", streams: int = 0, threads: int = 0, inference_precision: str = "f32", tokenizer: str = "native"):
        self.folder = Path(folder)
        for name in (MODEL_XML, MODEL_BIN, TOKENIZER_FILE):
            if not (self.folder / name).is_file():
                raise TangoEdgeError(f"{self.folder / name} is missing: a tier folder holds {MODEL_XML}, {MODEL_BIN}, {TOKENIZER_FILE} and config.json")
        self.labels = read_labels(self.folder)
        self.encoder = TextEncoder(self.folder / TOKENIZER_FILE, max_length, self._ov_tokenizer(tokenizer), native=tokenizer == "native")
        self.device = device
        self.streams = min(streams, threads) if threads else streams
        self.threads = threads
        self.inference_precision = inference_precision
        try:
            self.model = ov_core().read_model(self.folder / MODEL_XML)
        except Exception as exc:
            raise TangoEdgeError(f"cannot read {self.folder / MODEL_XML}: {ov_message(exc)}") from None
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        if "input_ids" not in self.input_names:
            raise TangoEdgeError(f"{self.folder / MODEL_XML} has inputs {self.input_names}; expected input_ids")
        self._compiled = None
        self._compile_lock = threading.Lock()

    def _ov_tokenizer(self, choice: str) -> OpenVINOTokenizer | None:
        path = self.folder / OV_TOKENIZER_FILE
        if choice not in ("native", "openvino") or not path.is_file():
            return None
        try:
            import openvino_tokenizers  # noqa: F401
        except ImportError:
            return None  # still correct, on tokenizer.json
        return OpenVINOTokenizer(path, ov_core())  # string operations run on the CPU whatever the model's device

    @property
    def compiled(self):
        with self._compile_lock:
            if self._compiled is None:
                config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": self.inference_precision}
                if self.streams:
                    config["NUM_STREAMS"] = str(self.streams)
                if self.threads:
                    config["INFERENCE_NUM_THREADS"] = str(self.threads)
                try:
                    self._compiled = ov_core().compile_model(self.model, self.device, config)
                except Exception as exc:
                    raise TangoEdgeError(f"cannot compile {self.folder / MODEL_XML} on {self.device}: {ov_message(exc)}") from None
            return self._compiled

    @property
    def optimal_requests(self) -> int:
        return int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def inputs(self, batch: list[Encoded]) -> dict[str, np.ndarray]:
        """Padded model inputs for a batch, only those the model declares."""
        arrays = pad_batch(batch, self.encoder.pad_id)
        return {name: arrays[name] for name in self.input_names}

    def request_queue(self, callback: Callable, jobs: int = 0):
        """An AsyncInferQueue over the compiled model; `jobs=0` takes OpenVINO's optimal request count, at least 2.

        Two requests even on one stream: the next batch is prepared and queued while the current one runs.
        """
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, jobs or max(2, self.optimal_requests))
        queue.set_callback(callback)
        return queue

    def logits(self, encoded: list[Encoded], batch_size: int, jobs: int = 0) -> np.ndarray:
        """Logits for every input, in input order: length-sorted batches on asynchronous requests."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = np.empty((len(encoded), len(self.labels)), dtype=np.float32)
        errors: list[BaseException] = []

        def done(request, rows):
            try:
                out[rows] = request.get_output_tensor(0).data
            except BaseException as exc:  # surface callback failures to the caller
                errors.append(exc)

        queue = self.request_queue(done, jobs)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            queue.start_async(self.inputs([encoded[i] for i in rows]), rows)
        queue.wait_all()
        if errors:
            raise errors[0]
        return out

