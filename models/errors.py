"""Errors raised by the model layer.

Every error derives from :class:`ModelError` and from the builtin that fits it, so callers can
catch either the project type or the builtin.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ModelError",
    "UnsafeCheckpointError",
]


class ModelError(Exception):
    """Base class of every error raised by ``models``."""


class CheckpointError(ModelError, ValueError):
    """A checkpoint does not match the model it is loaded into (keys, shapes, format)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asked to import or call something outside the allow-list."""


class CheckpointNotFoundError(ModelError, FileNotFoundError):
    """A checkpoint could be found neither on disk, in the hub cache, nor on the hub."""
