"""The cascade's settings: what cascade.json stores plus the per-machine and per-call overrides.

cascade.json, version 2 (the folder contract):

    {"version": 2, "task": "sst2", "metric": "accuracy", "text_columns": ["sentence"], "label_column": "label",
     "tiers": [{"dir": "tier1", "threshold": 0.72, "temperature": 1.31},
               {"dir": "tier2", "threshold": 0.85},
               {"dir": "tier3"}],
     "max_length": 128, "max_wait_ms": 10.0}

Version 1 folders (top-level `threshold`, `temperature`, `deferral_rate`, tiers in tier1/ and tier2/) load as a
two-tier version 2 config. Batch sizes and streams are machine settings: they come from the autotune profile
and are not written to cascade.json.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from .errors import TangoEdgeError
from .metrics import METRICS

CASCADE_FILE = "cascade.json"
CONFIG_VERSION = 2
DEFAULT_THRESHOLD = 0.9
FIRST_TIER_BATCH_SIZE = 64  # tier 1 is cheap per input: large batches amortise the per-request overhead
LATER_TIER_BATCH_SIZE = 16  # later tiers batch the deferred few: small batches fill sooner
MACHINE_FIELDS = ("batch_size", "streams")  # per tier, from the profile
LEGACY_TIER_DIRS = ("tier1", "tier2")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TierConfig:
    """One tier of a cascade: its folder and how it routes."""

    dir: str
    # Answer when the tier's confidence is >= threshold, else defer to the next tier. None on the last tier
    # (it answers everything); 0 = answer everything here; above 1 = skip this tier.
    threshold: float | None = None
    temperature: float = 1.0  # logits are divided by it before the softmax (calibration)
    # Share of all calibration inputs this tier passed on (written by `calibrate`): autotune times the cascade
    # at these shares, since its own sample (training sentences, the easy cases) defers far fewer.
    deferral_rate: float | None = None
    batch_size: int | None = None  # instances per request; None = FIRST_/LATER_TIER_BATCH_SIZE
    streams: int = 0  # OpenVINO NUM_STREAMS; 0 = the THROUGHPUT hint's choice

    def validate(self, where: str, last: bool) -> "TierConfig":
        def bad(name, why):
            raise TangoEdgeError(f"invalid {where}.{name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.dir, str) or not self.dir or Path(self.dir).is_absolute() or ".." in Path(self.dir).parts:
            bad("dir", "must be a folder name inside the cascade folder")
        if not last and (not _is_number(self.threshold) or self.threshold < 0):
            bad("threshold", "must be a number >= 0 (0 = answer everything here, above 1 = skip this tier)")
        if last and self.threshold is not None:
            bad("threshold", "the last tier answers everything that reaches it: leave its threshold out")
        if not _is_number(self.temperature) or not self.temperature > 0:
            bad("temperature", "must be a number > 0")
        if self.deferral_rate is not None and (not _is_number(self.deferral_rate) or not 0 <= self.deferral_rate <= 1):
            bad("deferral_rate", "must be a number in [0, 1] or null")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1):
            bad("batch_size", "must be an integer >= 1")
        if not isinstance(self.streams, int) or isinstance(self.streams, bool) or self.streams < 0:
            bad("streams", "must be an integer >= 0 (0 = automatic)")
        return self


@dataclass
class CascadeConfig:
    """Settings of one cascade. Stored in cascade.json; batch sizes and streams usually come from the profile."""

    tiers: list[TierConfig] = field(default_factory=lambda: [TierConfig("tier1", DEFAULT_THRESHOLD), TierConfig("tier2")])
    task: str = "classification"
    metric: str = "accuracy"  # accuracy, f1 (binary, class 1) or mcc
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])  # one, or two for a pair task
    label_column: str = "label"
    max_length: int = 128  # tokens per input; longer inputs are truncated
    max_wait_ms: float = 10.0  # online requests: longest wait for a batch to fill, at each tier
    # Inputs sorted by length together to cut padding. Large, because later tiers' batches are made of the
    # deferred few: at 10% deferred, 16 of them span 160 inputs of a window, and in a 1024 window that spread
    # padded tier 2's batches by a third (measured on SST-2); 4096 brings it within 6% of tier 2 run alone.
    sort_window: int = 4096
    inference_precision: str = "f32"  # OpenVINO INFERENCE_PRECISION_HINT for ops left in float
    # "native": the C++ core's WordPiece for plain-ASCII texts of an uncased WordPiece tokenizer, the rest as
    # "openvino"; "openvino": a tier's openvino_tokenizer.xml when it has one; "rust": tokenizer.json
    tokenizer: str = "native"

    # ---- derived -------------------------------------------------------------------------------------------

    @property
    def num_tiers(self) -> int:
        return len(self.tiers)

    @property
    def is_pair_task(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def thresholds(self) -> list[float]:
        """The routing thresholds of every tier but the last."""
        return [t.threshold for t in self.tiers[:-1]]

    def batch_size(self, index: int) -> int:
        explicit = self.tiers[index].batch_size
        if explicit is not None:
            return explicit
        return FIRST_TIER_BATCH_SIZE if index == 0 else LATER_TIER_BATCH_SIZE

    @property
    def batch_sizes(self) -> list[int]:
        return [self.batch_size(i) for i in range(self.num_tiers)]

    # ---- checking ------------------------------------------------------------------------------------------

    def validate(self) -> "CascadeConfig":
        """Raise TangoEdgeError naming the first bad field."""

        def bad(name, why):
            raise TangoEdgeError(f"invalid {name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.tiers, list) or len(self.tiers) < 2 or not all(isinstance(t, TierConfig) for t in self.tiers):
            raise TangoEdgeError("a cascade needs a list of at least two tiers")
        for index, tier in enumerate(self.tiers):
            tier.validate(f"tiers[{index}]", last=index == len(self.tiers) - 1)
        dirs = [t.dir for t in self.tiers]
        if len(set(dirs)) != len(dirs):
            bad("tiers", "two tiers name the same folder")
        for name in ("max_length", "sort_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad(name, "must be an integer >= 1")
        if not _is_number(self.max_wait_ms) or self.max_wait_ms < 0:
            bad("max_wait_ms", "must be a number >= 0 (0 = wait for a full batch)")
        if self.inference_precision not in ("f32", "bf16", "f16"):
            bad("inference_precision", "must be f32, bf16 or f16")
        if self.tokenizer not in ("native", "openvino", "rust"):
            bad("tokenizer", "must be native, openvino or rust")
        if self.metric not in METRICS:
            bad("metric", f"must be one of {', '.join(METRICS)}")
        if not isinstance(self.text_columns, list) or len(self.text_columns) not in (1, 2) or not all(isinstance(c, str) and c for c in self.text_columns):
            bad("text_columns", "must list one column, or two for a pair task")
        return self

    # ---- overrides -----------------------------------------------------------------------------------------

    def replace(
        self,
        *,
        threshold: float | None = None,
        thresholds: Sequence[float] | None = None,
        batch_sizes: Sequence[int] | None = None,
        streams: Sequence[int] | None = None,
        temperatures: Sequence[float] | None = None,
        deferral_rates: Sequence[float | None] | None = None,
        **overrides,
    ) -> "CascadeConfig":
        """A validated copy with the non-None overrides applied.

        `threshold` sets the first tier's threshold; `thresholds` sets every tier's but the last (one per
        tier, or N - 1); `batch_sizes` and `streams` give one value per tier.
        """
        config = copy.deepcopy(self)
        unknown = set(overrides) - {f.name for f in fields(CascadeConfig)} - {"tiers"}
        if unknown:
            raise TangoEdgeError(f"unknown setting(s) {sorted(unknown)}")
        for name, value in overrides.items():
            if value is not None:
                setattr(config, name, value)
        n = config.num_tiers
        if thresholds is not None:
            thresholds = list(thresholds)
            if len(thresholds) != n - 1:
                raise TangoEdgeError(f"thresholds: this cascade has {n} tiers, so {n - 1} threshold(s) (the last tier has none); got {len(thresholds)}")
            for tier, value in zip(config.tiers, thresholds):
                tier.threshold = value
        if threshold is not None:
            config.tiers[0].threshold = threshold
        for name, values in (("batch_size", batch_sizes), ("streams", streams), ("temperature", temperatures), ("deferral_rate", deferral_rates)):
            if values is None:
                continue
            values = list(values)
            allowed = {n - 1, n} if name in ("temperature", "deferral_rate") else {n}  # the last tier's may be left out
            if len(values) not in allowed:
                raise TangoEdgeError(f"{name}s: this cascade has {n} tiers; got {len(values)} value(s)")
            for tier, value in zip(config.tiers, values):
                setattr(tier, name, value)
        return config.validate()

    # ---- storage -------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict) -> "CascadeConfig":
        """Build from the JSON object of a cascade.json of either version (raises TangoEdgeError)."""
        if not isinstance(raw, dict):
            raise TangoEdgeError("cascade.json must hold a JSON object")
        raw = dict(raw)
        version = raw.pop("version", CONFIG_VERSION if "tiers" in raw else 1)
        if version == 1:
            raw = _upgrade_v1(raw)
        elif version != CONFIG_VERSION:
            raise TangoEdgeError(f"unknown cascade.json version {version!r} (this tango-edge reads 1 and {CONFIG_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TangoEdgeError(f"unknown field(s) {unknown}")
        tiers_raw = raw.pop("tiers", None)
        if not isinstance(tiers_raw, list) or not all(isinstance(t, dict) for t in tiers_raw):
            raise TangoEdgeError("'tiers' must be a list of objects, one per tier ({\"dir\": ..., \"threshold\": ...})")
        tier_fields = {f.name for f in fields(TierConfig)}
        tiers = []
        for index, entry in enumerate(tiers_raw):
            extra = sorted(set(entry) - tier_fields)
            if extra:
                raise TangoEdgeError(f"tiers[{index}]: unknown field(s) {extra}")
            if "dir" not in entry:
                raise TangoEdgeError(f"tiers[{index}]: 'dir' (the tier's folder) is missing")
            last = index == len(tiers_raw) - 1
            entry = {"threshold": None if last else DEFAULT_THRESHOLD, **entry}
            tiers.append(TierConfig(**entry))
        try:
            return cls(tiers=tiers, **raw).validate()
        except TypeError as exc:
            raise TangoEdgeError(str(exc)) from None

    @classmethod
    def load(cls, directory: str | Path) -> "CascadeConfig":
        path = Path(directory) / CASCADE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TangoEdgeError(f"{path} is missing: a cascade folder holds its tier folders and cascade.json") from None
        except (OSError, ValueError) as exc:
            raise TangoEdgeError(f"{path} is not valid JSON ({exc})") from None
        try:
            return cls.from_dict(raw)
        except TangoEdgeError as exc:
            raise TangoEdgeError(f"{path}: {exc}") from None

    def to_dict(self, *, keep_machine_fields: bool = False) -> dict:
        data = {"version": CONFIG_VERSION, **asdict(self)}
        for tier in data["tiers"]:
            if tier["threshold"] is None:
                del tier["threshold"]
            if tier["deferral_rate"] is None:
                del tier["deferral_rate"]
            if not keep_machine_fields:
                for name in MACHINE_FIELDS:
                    tier.pop(name)
        return data

    def save(self, directory: str | Path, *, keep_machine_fields: bool = False) -> Path:
        """Write cascade.json (version 2). Batch sizes and streams belong to the machine profile, so they are left out."""
        path = Path(directory) / CASCADE_FILE
        path.write_text(json.dumps(self.to_dict(keep_machine_fields=keep_machine_fields), indent=2) + "\n", encoding="utf-8")
        return path


def _upgrade_v1(raw: dict) -> dict:
    """A version 1 cascade.json (two tiers in tier1/ and tier2/, flat tier1_*/tier2_* fields) as version 2."""
    raw = dict(raw)
    first = {"dir": LEGACY_TIER_DIRS[0], "threshold": raw.pop("threshold", DEFAULT_THRESHOLD), "temperature": raw.pop("temperature", 1.0)}
    second = {"dir": LEGACY_TIER_DIRS[1]}
    if raw.get("deferral_rate") is not None:
        first["deferral_rate"] = raw.pop("deferral_rate")
    raw.pop("deferral_rate", None)
    for index, tier in enumerate((first, second), start=1):
        for name in MACHINE_FIELDS:
            key = f"tier{index}_{name}"
            if key in raw:
                tier[name] = raw.pop(key)
    return {**raw, "tiers": [first, second]}
