"""PyAV media layer: probe a video, read its frames upright, seek exactly, write a video.
Videos in object stores (``s3://``, ``gs://``, ``az://``) are read through fsspec.

Nothing here imports torch, Ray, Zarr or Redis, nor any other project package: ``actors``
(the decode stage) and ``flows`` (demo, render) build on it.

Example:
    >>> from media import read_frames
    >>> for index, rgb in read_frames("video.mp4", stride=10):  # doctest: +SKIP
    ...     rgb.shape  # (H, W, 3) uint8, upright
"""

from __future__ import annotations

from media._image import Orientation, SizeFloor, output_size
from media._info import TimeSource, VideoInfo
from media._probe import PROBE_FRAMES, orientation_from, probe_video
from media._reader import DecodedFrame, VideoReader, read_frames
from media._remote import OBJECT_STORE_SCHEMES
from media._sampling import Choice, FrameClock, Sampler
from media._source import OPEN_TIMEOUT_S, READ_TIMEOUT_S, display_name, is_live
from media._stream import MAX_PIXELS, check_frame_pixels
from media._torchcodec import (
    BACKENDS,
    Backend,
    TorchcodecUnavailableError,
    UnsupportedBackendError,
    choose_backend,
    torchcodec_error,
    torchcodec_unsuitable,
)
from media._writer import VideoWriter
from media.errors import (
    DecodeError,
    MediaError,
    NoVideoStreamError,
    ResourceLimitError,
    SourceNotFoundError,
    SourceNotReadableError,
    SourceUnreachableError,
    UnknownFrameRateError,
    UnreadableMediaError,
)

__all__ = [
    "BACKENDS",
    "MAX_PIXELS",
    "OBJECT_STORE_SCHEMES",
    "OPEN_TIMEOUT_S",
    "PROBE_FRAMES",
    "READ_TIMEOUT_S",
    "Backend",
    "Choice",
    "DecodeError",
    "DecodedFrame",
    "FrameClock",
    "MediaError",
    "NoVideoStreamError",
    "Orientation",
    "ResourceLimitError",
    "Sampler",
    "SizeFloor",
    "SourceNotFoundError",
    "SourceNotReadableError",
    "SourceUnreachableError",
    "TimeSource",
    "TorchcodecUnavailableError",
    "UnknownFrameRateError",
    "UnreadableMediaError",
    "UnsupportedBackendError",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "check_frame_pixels",
    "choose_backend",
    "display_name",
    "is_live",
    "orientation_from",
    "output_size",
    "probe_video",
    "read_frames",
    "torchcodec_error",
    "torchcodec_unsuitable",
]
