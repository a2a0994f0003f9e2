"""Errors raised by the actor layer.

Every error defined here derives from :class:`ActorError` and from the builtin that fits it, so
callers can catch either the project type or the builtin. The decode errors (a missing video, a
file that is not a video, a limit exceeded) are raised by ``media`` and derive from
:class:`~media.errors.MediaError`; they are re-exported here for the stage's callers.
"""

from __future__ import annotations

from media.errors import (
    DecodeError,
    NoVideoStreamError,
    ResourceLimitError,
    SourceNotFoundError,
    SourceNotReadableError,
    SourceUnreachableError,
    UnknownFrameRateError,
    UnreadableMediaError,
)

__all__ = [
    "ActorError",
    "DecodeError",
    "InvalidDecodeSpecError",
    "NoVideoStreamError",
    "ResourceLimitError",
    "SourceNotFoundError",
    "SourceNotReadableError",
    "SourceUnreachableError",
    "UnknownFrameRateError",
    "UnreadableMediaError",
    "WriterSessionError",
]


class ActorError(Exception):
    """Base class of every error defined by ``actors``."""


class InvalidDecodeSpecError(ActorError, ValueError):
    """A :class:`~actors.decode.DecodeSpec` field or a decode argument has an invalid value."""


class WriterSessionError(ActorError, LookupError):
    """A pooled writer was asked to write for a job attempt whose store it has not opened."""
