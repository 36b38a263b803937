"""Errors a user can act on: the CLI prints them as one line, without a traceback."""


class TangoEdgeError(Exception):
    """A run-level problem (missing model folder, bad option, unreadable input) with what to do next."""
