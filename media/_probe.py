"""Read the facts of a video source by opening it and decoding its first few frames.

The frame size is checked against ``max_pixels`` twice: from the stream's header as soon as the
container is open, before any frame is decoded here, and then on each frame of the window
(headers may understate it).

Decoding a short window (``PROBE_FRAMES`` frames) settles what container headers cannot:
the real coded size, the display orientation, whether pts can be trusted for time (present
and strictly increasing in decode output), and whether the stream decodes one frame per
packet, which a keyframe seek needs to number frames without decoding the prefix.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, field

import av

from media._image import Orientation, SizeFloor, orientation_of, output_size
from media._info import VideoInfo
from media._source import display_name, is_live, open_container
from media._stream import check_frame_pixels, iter_packets, video_stream
from media.errors import UnreadableMediaError

__all__ = ["PROBE_FRAMES", "orientation_from", "probe_video"]

logger = logging.getLogger(__name__)

PROBE_FRAMES = 16
_PROBE_MAX_PACKETS = 2048
#: Codecs whose packets decode to exactly one frame each (no hidden frames, no field pairs in
#: practice); other codecs are always decoded from the start on resume.
_SEEK_CODECS = frozenset({"h264", "hevc", "mpeg4", "av1", "vp9", "mjpeg", "ffv1", "prores"})


@dataclass(slots=True)
class _Window:
    """What the probe saw in its window of packets and frames."""

    packets: int = 0  # non-empty, not-discarded packets fed to the decoder
    frames: int = 0  # frames out of the decoder, corrupt ones included
    errors: int = 0  # packets that failed to decode plus frames flagged corrupt
    pts: list[int | None] = field(default_factory=list)
    first: av.VideoFrame | None = None


def _decode_window(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    name: str,
    max_pixels: int | None,
) -> _Window:
    window = _Window()
    for packet in iter_packets(container, stream, name):
        if packet.size and not packet.is_discard:
            window.packets += 1
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            window.errors += 1
            frames = []
        _take(window, frames, max_pixels, name)
        if window.frames >= PROBE_FRAMES or window.packets >= _PROBE_MAX_PACKETS:
            try:
                frames = stream.codec_context.decode(None)  # drain the decoder
            except av.error.FFmpegError:
                window.errors += 1
                frames = []
            _take(window, frames, max_pixels, name)
            break
    return window


def _take(window: _Window, frames: list[av.VideoFrame], max_pixels: int | None, name: str) -> None:
    for frame in frames:
        window.frames += 1
        window.pts.append(frame.pts)
        if frame.is_corrupt:
            window.errors += 1
            continue
        check_frame_pixels(frame.width, frame.height, max_pixels, name, window.frames - 1)
        if window.first is None:
            window.first = frame


def _strictly_increasing(values: list[int | None]) -> bool:
    if any(v is None for v in values):
        return False
    return all(a < b for a, b in itertools.pairwise(values))  # type: ignore[operator]


def probe_video(
    source: str | os.PathLike[str],
    *,
    max_side: int | None,
    threads: int,
    open_timeout_s: float,
    read_timeout_s: float,
    max_pixels: int | None = None,
    floor: SizeFloor | None = None,
) -> VideoInfo:
    """Open ``source``, decode its first frames and describe it.

    Args:
        source: local path or URL.
        max_side: longest output side in pixels, or None for the coded size.
        threads: decoder threads (0 = FFmpeg decides).
        open_timeout_s: seconds to wait for a network source to open.
        read_timeout_s: seconds to wait for data from a network source.
        max_pixels: largest frame (width x height) accepted, or None for no limit.
        floor: output the upright frame at :meth:`SizeFloor.size` of its coded size instead
            (exclusive with ``max_side``).

    Returns:
        The :class:`VideoInfo` that readers and the decode stage work with.

    Raises:
        ResourceLimitError: the stream's header or a frame of the window is above
            ``max_pixels`` (the header is checked before any frame is decoded).
        DecodeError: a subclass naming the source and the cause when it cannot be read.
    """
    if floor is not None and max_side is not None:
        msg = f"give max_side or floor, not both; got max_side={max_side}, floor={floor}"
        raise ValueError(msg)
    name = display_name(source)
    timeouts = {"open_timeout_s": open_timeout_s, "read_timeout_s": read_timeout_s}
    with open_container(source, **timeouts) as container:
        stream = video_stream(container, name, threads=threads)
        context = stream.codec_context  # the size from the headers; 0 where none is given
        check_frame_pixels(context.width, context.height, max_pixels, name)
        window = _decode_window(container, stream, name, max_pixels)
        if window.first is None and window.packets == 0:
            msg = (
                f"{name!r}: its video stream holds no frame (the data ends before the first "
                "one); the file is empty or truncated"
            )
            raise UnreadableMediaError(msg)
        if window.first is None:
            msg = (
                f"{name!r}: no decodable video frame in its first {window.packets} packets "
                f"({window.errors} failed or corrupt); the stream is damaged or its codec "
                f"({stream.codec_context.name}) is not supported"
            )
            raise UnreadableMediaError(msg)
        info = _describe(container, stream, window, name, max_side, floor)
    logger.debug("probed %s: %s", name, info)
    return info


def _describe(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    window: _Window,
    name: str,
    max_side: int | None,
    floor: SizeFloor | None,
) -> VideoInfo:
    first = window.first
    assert first is not None
    time_base = stream.time_base
    time_source = "pts" if time_base and _strictly_increasing(window.pts) else "rate"
    orientation = orientation_of(first, stream)
    height, width = output_size(first.height, first.width, max_side=max_side)
    if orientation.swaps_axes:
        height, width = width, height
    if floor is not None:  # the floor is of the upright frame
        height, width = floor.size(height, width)
    codec = stream.codec_context.name
    one_to_one = window.errors == 0 and window.frames == window.packets
    return VideoInfo(
        source=name,
        container=container.format.name,
        codec=codec,
        source_width=first.width,
        source_height=first.height,
        width=width,
        height=height,
        fps=_frame_rate(stream),
        time_base=time_base,
        duration_s=_duration(container, stream),
        frame_count_hint=stream.frames or None,
        rotation=orientation.rotation,
        mirrored=orientation.mirrored,
        time_source=time_source,
        start_pts=window.pts[0] if time_source == "pts" else None,
        seekable=(
            time_source == "pts" and one_to_one and codec in _SEEK_CODECS and not is_live(name)
        ),
    )


def orientation_from(info: VideoInfo) -> Orientation:
    """The transform that :func:`probe_video` recorded in ``info``."""
    return Orientation(rotation=info.rotation, mirrored=info.mirrored)


def _frame_rate(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.guessed_rate, stream.average_rate):
        if rate:
            return _finite_or_none(float(rate))
    return None


def _duration(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration and stream.time_base:
        return _finite_or_none(float(stream.duration * stream.time_base))
    if container.duration:
        return _finite_or_none(container.duration / av.time_base)
    return None


def _finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite positive number, else None."""
    return value if value is not None and math.isfinite(value) and value > 0 else None
