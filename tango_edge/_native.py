"""The compiled core (`_core`, built from csrc/ by scikit-build-core), or one line saying how to build it."""

from __future__ import annotations

try:
    from ._core import DeferralQueue, LatencyRecorder, WordPiece, now_ns
except ModuleNotFoundError as exc:  # the source tree's tango_edge/ imported without a build
    if exc.name != f"{__package__}._core":
        raise
    raise ImportError(
        "tango_edge._core is not built: this is the source checkout's tango_edge/ without its compiled core. "
        "Run `pip install -e .` in the repository root (the README's install command), or run from outside the checkout."
    ) from None

__all__ = ["DeferralQueue", "LatencyRecorder", "WordPiece", "now_ns"]
