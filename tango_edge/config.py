"""The cascade's settings: what cascade.json stores plus the per-machine and per-call overrides."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import TangoEdgeError

CASCADE_FILE = "cascade.json"


@dataclass
class CascadeConfig:
    """Settings of one cascade. Stored in cascade.json; batch sizes usually come from the machine profile."""

    task: str = "classification"
    threshold: float = 0.9  # defer when tier-1 confidence is below it; 0 = tier 1 only, > 1 = tier 2 only
    temperature: float = 1.0  # tier-1 logits are divided by it before the softmax (calibration)
    # Share of the calibration data the threshold deferred: autotune times the cascade at this share on its
    # sample, whose own deferral at the threshold can be far off (training sentences are tier 1's easy cases).
    deferral_rate: float | None = None
    max_length: int = 128  # tokens per input; longer inputs are truncated
    tier1_batch_size: int = 64  # instances per tier-1 request
    tier2_batch_size: int = 16  # deferred instances per tier-2 request
    max_wait_ms: float = 10.0  # online requests: longest wait for a tier-2 batch to fill
    # Inputs sorted by length together to cut padding. Large, because tier-2 batches are made of the deferred
    # few: at 10% deferred, 16 of them span 160 inputs of a window, and in a 1024 window that spread padded
    # tier 2's batches by a third (measured on SST-2); 4096 brings it within 6% of tier 2 run alone.
    sort_window: int = 4096
    tier1_streams: int = 0  # OpenVINO NUM_STREAMS; 0 = the THROUGHPUT hint's choice
    tier2_streams: int = 0
    inference_precision: str = "f32"  # OpenVINO INFERENCE_PRECISION_HINT for ops left in float
    # "native": the C++ core's WordPiece for plain-ASCII texts of a BERT uncased tokenizer, the rest as "openvino";
    # "openvino": a tier's openvino_tokenizer.xml when it has one; "rust": tokenizer.json
    tokenizer: str = "native"
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])  # for calibrate on TSV files
    label_column: str = "label"
    metric: str = "accuracy"  # accuracy, f1 or mcc

    def validate(self) -> "CascadeConfig":
        """Raise TangoEdgeError naming the first bad field."""

        def bad(name, why):
            raise TangoEdgeError(f"invalid {name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or not math.isfinite(self.threshold) or self.threshold < 0:
            bad("threshold", "must be a number >= 0 (0 = tier 1 only, above 1 = tier 2 only)")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool) or not self.temperature > 0:
            bad("temperature", "must be a number > 0")
        if self.deferral_rate is not None and (not isinstance(self.deferral_rate, (int, float)) or isinstance(self.deferral_rate, bool) or not 0 <= self.deferral_rate <= 1):
            bad("deferral_rate", "must be a number in [0, 1] or null")
        for name in ("max_length", "tier1_batch_size", "tier2_batch_size", "sort_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "must be an integer >= 1")
        for name in ("tier1_streams", "tier2_streams"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                bad(name, "must be an integer >= 0 (0 = automatic)")
        if not isinstance(self.max_wait_ms, (int, float)) or self.max_wait_ms < 0:
            bad("max_wait_ms", "must be a number >= 0 (0 = wait for a full batch)")
        if self.inference_precision not in ("f32", "bf16", "f16"):
            bad("inference_precision", "must be f32, bf16 or f16")
        if self.tokenizer not in ("native", "openvino", "rust"):
            bad("tokenizer", "must be native, openvino or rust")
        if self.metric not in ("accuracy", "f1", "mcc"):
            bad("metric", "must be accuracy, f1 or mcc")
        return self

    def replace(self, **overrides) -> "CascadeConfig":
        """A copy with the non-None overrides applied, validated."""
        values = asdict(self)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return CascadeConfig(**values).validate()

    @classmethod
    def load(cls, directory: str | Path) -> "CascadeConfig":
        path = Path(directory) / CASCADE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TangoEdgeError(f"{path} is missing: a cascade folder holds tier1/, tier2/ and cascade.json") from None
        except (OSError, ValueError) as exc:
            raise TangoEdgeError(f"{path} is not valid JSON ({exc})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict):
            raise TangoEdgeError(f"{path} must hold a JSON object")
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TangoEdgeError(f"{path}: unknown field(s) {unknown}")
        try:
            return cls(**raw).validate()
        except TangoEdgeError as exc:
            raise TangoEdgeError(f"{path}: {exc}") from None

    def save(self, directory: str | Path, *, keep_machine_fields: bool = False) -> Path:
        """Write cascade.json. Batch sizes and streams belong to the machine profile, so they are left out."""
        data = asdict(self)
        if not keep_machine_fields:
            for name in ("tier1_batch_size", "tier2_batch_size", "tier1_streams", "tier2_streams"):
                data.pop(name)
        path = Path(directory) / CASCADE_FILE
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return path
