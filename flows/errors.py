"""Errors raised by flows/ (job specs and commands)."""

from __future__ import annotations

__all__ = ["FlowError", "SpecError"]


class FlowError(Exception):
    """Base class of every error raised by ``flows``."""


class SpecError(FlowError, ValueError):
    """A job spec is malformed: unknown keys, bad values, inconsistent options."""
