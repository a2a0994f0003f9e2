"""Errors raised by the media layer.

Every error derives from :class:`MediaError` and from the builtin that fits it, so callers can
catch either the project type or the builtin (``except FileNotFoundError`` works for a missing
video, ``except ValueError`` for a file that is not a video).
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "MediaError",
    "NoSeekPlan",
    "NoVideoStreamError",
    "ResourceLimitError",
    "SeekMismatch",
    "SourceNotFoundError",
    "SourceNotReadableError",
    "SourceUnreachableError",
    "UnknownFrameRateError",
    "UnreadableMediaError",
]


class MediaError(Exception):
    """Base class of every error raised by ``media``."""


class DecodeError(MediaError, ValueError):
    """A video source cannot be decoded; the message names the source and the cause."""


class SourceNotFoundError(DecodeError, FileNotFoundError):
    """A local video path does not exist (or is not a regular file), or a URL answers 404."""


class SourceNotReadableError(DecodeError, PermissionError):
    """A local video file exists but this process may not read it."""


class SourceUnreachableError(DecodeError, ConnectionError):
    """A network source refused the connection, did not answer in time, or stopped answering."""


class UnreadableMediaError(DecodeError):
    """The bytes are not a media container FFmpeg can read (empty, truncated header, not media)."""


class NoVideoStreamError(DecodeError):
    """The container opens but holds no video stream (audio only, subtitles, data)."""


class UnknownFrameRateError(DecodeError):
    """Time-based sampling was asked for but the video has neither usable pts nor a frame rate."""


class ResourceLimitError(DecodeError):
    """The video exceeds a resource limit (pixels per frame, bytes of a batch's dense maps).

    Raised when the decoder learns the video's size, before any frame is decoded for the job
    or sent on, and again for any later frame that is larger than the limit allows.
    """


class SeekMismatch(MediaError, RuntimeError):
    """A resume seek did not land where its plan says; the reader decodes from the start.

    Raised and handled inside ``media``; it never reaches a caller of :class:`VideoReader`.
    """


class NoSeekPlan(SeekMismatch):
    """No keyframe qualifies (or the target is near the end); the reader decodes from 0."""
