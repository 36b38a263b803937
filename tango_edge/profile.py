"""Per-machine tuning profiles: the batch sizes and streams `tango-edge autotune` found fastest here.

A profile is a JSON file in the user's cache directory, one per cascade folder, valid only for the CPU, core
count, OpenVINO version and model files it was measured with. Anything else (missing, stale, corrupt) means
safe defaults and one line saying how to tune.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from .config import CascadeConfig

PROFILE_VERSION = 2  # settings: {"tiers": [{"batch_size": ..., "streams": ...}, ...]}, one entry per tier
TUNED_FIELDS = ("batch_size", "streams")  # per tier


def cache_dir() -> Path:
    """$TANGO_EDGE_CACHE, else $XDG_CACHE_HOME/tango-edge, else ~/.cache/tango-edge."""
    if os.environ.get("TANGO_EDGE_CACHE"):
        return Path(os.environ["TANGO_EDGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tango-edge"


def _cpuinfo_field(name: str) -> str | None:
    """The first value of `name` in /proc/cpuinfo (None off Linux or when absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


# The widest integer-matrix instructions a CPU offers, widest first: OpenVINO's INT8 kernels differ by them, and
# so do the last digits of an INT8 model's scores.
_ISA_FLAGS = (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2"))


def cpu_isa(flags: set[str] | None = None) -> str:
    """The CPU's widest INT8-relevant instruction set ("AMX", "AVX-512 VNNI", ..., "AVX2"), from /proc/cpuinfo."""
    if flags is None:
        flags = set((_cpuinfo_field("flags") or "").split())
    return next((name for flag, name in _ISA_FLAGS if flag in flags), "unknown instruction set")


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_summary() -> dict:
    """What measured figures depend on, for the JSON files that keep them: CPU, cores, instruction set."""
    return {"cpu": cpu_model(), "cores": cpu_cores(), "isa": cpu_isa()}


def machine_key(device: str = "CPU") -> dict:
    import openvino as ov

    return {"cpu": cpu_model(), "cores": cpu_cores(), "openvino": ov.get_version(), "device": device}


def models_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for tier in CascadeConfig.load(directory).tiers:
        digest.update(tier.dir.encode())
        for name in ("openvino_model.xml", "openvino_model.bin", "tokenizer.json"):
            path = directory / tier.dir / name
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def profile_path(directory: str | Path) -> Path:
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "profiles" / f"{key}.json"


def expected_key(directory: Path, device: str) -> dict:
    return {**machine_key(device), "models": models_hash(directory)}


def load_profile(directory: str | Path, device: str = "CPU") -> tuple[dict | None, str | None]:
    """(profile, None) when a valid profile exists, else (None, why not)."""
    directory = Path(directory)
    path = profile_path(directory)
    if not path.exists():
        return None, "no tuning profile for this machine"
    try:
        profile = json.loads(path.read_text(encoding="utf-8"))
        key, settings = profile["key"], profile["settings"]
        if profile.get("version") != PROFILE_VERSION or not isinstance(key, dict) or not isinstance(settings, dict):
            raise ValueError("unknown profile layout")
        tiers = settings["tiers"]
        if not isinstance(tiers, list) or any(not isinstance(t, dict) or t.get(name) is None for t in tiers for name in TUNED_FIELDS):
            raise ValueError("a tuned setting is missing")
        CascadeConfig.load(directory).replace(**tuned_overrides(settings))  # validates the values and their count
    except Exception as exc:  # noqa: BLE001 - any damage means "retune"
        return None, f"the tuning profile {path} is unreadable ({type(exc).__name__})"
    expected = expected_key(directory, device)
    changed = [k for k in expected if key.get(k) != expected[k]]
    if changed:
        return None, f"the tuning profile is stale ({', '.join(changed)} changed)"
    return profile, None


def tuned_overrides(settings: dict) -> dict:
    """A profile's settings as CascadeConfig.replace keywords (batch_sizes=, streams=)."""
    tiers = settings["tiers"]
    return {"batch_sizes": [t["batch_size"] for t in tiers], "streams": [t["streams"] for t in tiers]}


def save_profile(directory: str | Path, settings: dict, measurements: dict, device: str = "CPU") -> Path:
    """Store `settings` ({"tiers": [{"batch_size", "streams"}, ...]}) and the measurements behind them."""
    directory = Path(directory)
    path = profile_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiers = [{k: t[k] for k in TUNED_FIELDS} for t in settings["tiers"]]
    profile = {"version": PROFILE_VERSION, "directory": str(directory.resolve()), "key": expected_key(directory, device), "settings": {"tiers": tiers}, "measurements": measurements}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half a profile
    return path


def apply_profile(config: CascadeConfig, directory: str | Path, device: str = "CPU") -> tuple[CascadeConfig, str | None]:
    """The config with this machine's tuned settings, or unchanged plus a note saying how to tune."""
    profile, why_not = load_profile(directory, device)
    if profile is None:
        return config, f"{why_not}: using default batch sizes; run `tango-edge autotune --models {directory}` to tune"
    return config.replace(**tuned_overrides(profile["settings"])), None
