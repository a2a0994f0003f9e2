"""Errors raised by flows/ (job specs and commands)."""

from __future__ import annotations

__all__ = ["FlowError", "SpecError", "one_line"]

_MAX_LINE = 400


class FlowError(Exception):
    """Base class of every error raised by ``flows``."""


class SpecError(FlowError, ValueError):
    """A job spec is malformed: unknown keys, bad values, inconsistent options."""


def one_line(text: str, limit: int = _MAX_LINE) -> str:
    """``text`` as one line of at most ``limit`` characters: what a job record keeps."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
