"""An early-exit model (DeeBERT, Xin et al. 2020), the baseline the cascade is compared with: one OpenVINO model
per encoder layer, each returning the hidden states for the next (output 0) and its off-ramp's logits (output 1). An input stops at
the first layer whose softmax entropy falls below the threshold, so the layers after it never run; as in the
paper, inputs go one at a time (batch size 1: exits are per input).

A folder (written by scripts/deebert.py) holds stage01.xml/.bin ... (one per layer), early_exit.json (the stage
list, its recipe and the ramps' dev accuracy), tokenizer.json and config.json (labels).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TangoEdgeError, ov_message
from .tier import ov_core, read_labels, softmax
from .tokenization import TOKENIZER_FILE, Encoded, TextEncoder, pad_batch

EARLY_EXIT_FILE = "early_exit.json"
FIRST_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the first stage's (token types: BERT only)
LATER_INPUTS = ("hidden_states", "attention_mask")  # every later stage's


def stage_file(index: int) -> str:
    """The IR file of layer `index` (0-based)."""
    return f"stage{index + 1:02d}.xml"


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the softmax over the last axis: DeeBERT's exit criterion."""
    p = softmax(np.asarray(logits, dtype=np.float64))
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=-1)


class EarlyExitModel:
    """A staged early-exit classifier, compiled for latency (one input at a time)."""

    def __init__(self, folder: str | Path, *, max_length: int, device: str = "CPU", inference_precision: str = "f32"):
        self.folder = Path(folder)
        try:
            self.spec = json.loads((self.folder / EARLY_EXIT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TangoEdgeError(f"{self.folder / EARLY_EXIT_FILE} is missing: build an early-exit folder with scripts/deebert.py") from None
        except ValueError as exc:
            raise TangoEdgeError(f"{self.folder / EARLY_EXIT_FILE}: {exc}") from None
        self.labels = read_labels(self.folder)
        self.encoder = TextEncoder(self.folder / TOKENIZER_FILE, max_length, native=True)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        self.stages = []
        for name in self.spec["stages"]:
            try:
                self.stages.append(ov_core().compile_model(self.folder / name, device, config))
            except Exception as exc:
                raise TangoEdgeError(f"cannot load {self.folder / name}: {ov_message(exc)}") from None
        self.requests = [stage.create_infer_request() for stage in self.stages]
        self.first_inputs = [port.get_any_name() for port in self.stages[0].inputs]

    @property
    def num_layers(self) -> int:
        return len(self.stages)

    def _first(self, batch: list[Encoded]) -> dict[str, np.ndarray]:
        arrays = pad_batch(batch, self.encoder.pad_id)
        return {name: arrays[name] for name in self.first_inputs}

    def _layers(self, batch: list[Encoded]):
        """Run the stages in order on one batch, yielding (layer index, its logits) after each; the caller stops
        the walk by not asking for the next layer."""
        inputs = self._first(batch)
        mask = inputs["attention_mask"]
        for index, request in enumerate(self.requests):
            request.infer(inputs)
            # By position: a later stage's input is also called hidden_states, and a name finds the input first.
            hidden, logits = request.get_output_tensor(0).data.copy(), request.get_output_tensor(1).data.copy()
            yield index, logits
            inputs = {LATER_INPUTS[0]: hidden, LATER_INPUTS[1]: mask}

    def layer_logits(self, encoded: Sequence[Encoded], batch_size: int = 32) -> np.ndarray:
        """Every layer's off-ramp logits for every input, no exit: (layers, inputs, classes), input order."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = np.empty((self.num_layers, len(encoded), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            for index, logits in self._layers([encoded[i] for i in rows]):
                out[index, rows] = logits
        return out

    def classify(self, encoded: Encoded, threshold: float) -> tuple[int, int]:
        """One input, stopping at the first layer whose entropy is below `threshold`: (class, exit layer 1..L)."""
        for index, logits in self._layers([encoded]):
            if index == self.num_layers - 1 or entropy(logits[0]) < threshold:
                return int(logits[0].argmax()), index + 1
        raise AssertionError("unreachable: the last layer always answers")

    def predict(self, texts: Sequence, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Classes and exit layers (1..L) for texts, one at a time, tokenization included."""
        answers = [self.classify(e, threshold) for e in self.encoder.encode(list(texts))]
        return np.array([a[0] for a in answers], dtype=np.int64), np.array([a[1] for a in answers], dtype=np.int64)

    def stage_seconds(self, texts: Sequence) -> np.ndarray:
        """One timed pass at batch size 1 through every stage: seconds per instance spent in each layer's stage.
        The texts are tokenized together first, as for a tier timed alone; that time counts in the first layer."""
        spent = np.zeros(self.num_layers)
        started = time.perf_counter()
        encoded = self.encoder.encode(list(texts))
        spent[0] = time.perf_counter() - started
        for one in encoded:
            started = time.perf_counter()
            for index, _ in self._layers([one]):
                now = time.perf_counter()
                spent[index] += now - started
                started = now
        return spent / max(len(texts), 1)
