"""Errors a user can act on: the CLI prints them as one line, without a traceback."""


class TangoEdgeError(Exception):
    """A run-level problem (missing model folder, bad option, unreadable input) with what to do next."""


def ov_message(exc: BaseException) -> str:
    """The informative part of an OpenVINO error: its lines after the "Exception from <file>:<line>:" locations."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception from ")]
    return " ".join(useful) or (lines[0] if lines else repr(exc))
