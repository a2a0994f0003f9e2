"""Reading the selected frames of a probed video, from its start or from an exact seek point.

Frames are numbered by a decode counter (0 = first decoded frame), never by container pts or
frame counts, which AVI and others get wrong. Which frames are selected follows
:class:`~media.Sampler`; every selected frame converts to upright RGB of the probed output size.

Retry safety: a reader with ``start_index=k`` yields exactly the frames with ``index >= k`` of
a reader from 0, with equal pixels, indices, pts and times. One exception: on damaged input,
FFmpeg's frame-threaded error concealment is timing-dependent, so the pixels of concealed frames
may differ between runs (their indices do not); ``threads=1`` makes them repeatable.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from media._feed import Feed, FeedOptions
from media._image import Orientation, to_rgb
from media._info import VideoInfo
from media._live import LiveFeed, LiveOptions
from media._probe import orientation_from, probe_video
from media._sampling import Choice, FrameClock, Sampler
from media._source import OPEN_TIMEOUT_S, READ_TIMEOUT_S, is_live
from media._stream import MAX_PIXELS
from media._torchcodec import Backend, TorchcodecFrames, TorchcodecMismatch
from media.errors import UnknownFrameRateError

__all__ = ["DecodedFrame", "VideoReader", "read_frames"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One selected frame: its decode index, pts and time, and its pixels on demand.

    Args:
        index: decode index (0 = first decoded frame of the video).
        pts: presentation timestamp in the stream's time base, or None.
        time_s: seconds since the first frame (see :class:`~media.FrameClock`); for a live
            source, its wall-clock time in Unix seconds (:mod:`media._live`).

    A corrupt slot (``corrupt``: its packet failed to decode or the decoder flagged the frame)
    has no pixels; :meth:`rgb` gives black. A PyAV frame is converted when :meth:`rgb` is
    called; torchcodec gives its frames converted (``_frame`` is then the RGB array).
    """

    index: int
    pts: int | None
    time_s: float
    _frame: av.VideoFrame | np.ndarray | None
    _shape: tuple[int, int, int]
    _orientation: Orientation

    @property
    def corrupt(self) -> bool:
        return self._frame is None

    def rgb(self, out: np.ndarray | None = None) -> np.ndarray:
        """The frame as upright (H, W, 3) uint8 RGB of the probed output size.

        Args:
            out: where to write it (an (H, W, 3) uint8 array); None allocates one.

        Returns:
            ``out``, or the new array.
        """
        if out is None:
            out = np.empty(self._shape, dtype=np.uint8)
        if self._frame is None:
            out[...] = 0
        elif isinstance(self._frame, np.ndarray):
            out[...] = self._frame
        else:
            to_rgb(self._frame, out, orientation=self._orientation)
        return out


class VideoReader:
    """The selected frames of one probed video, in decode order; one pass per reader.

    Args:
        source: local path or URL, as given to :func:`~media.probe_video`.
        info: the probe's facts (output size, orientation, time rule, seekability).
        sampler: which frames to select; None selects every frame.
        start_index: first decode index to yield; earlier frames are decoded (or skipped by an
            exact keyframe seek) but not yielded.
        seek: allow a keyframe seek to ``start_index`` / ``sampler.start_s`` (only when exact).
        threads: decoder threads; 0 lets FFmpeg choose.
        open_timeout_s: seconds a network source may take to open.
        read_timeout_s: seconds a network source may stay silent while reading.
        max_pixels: largest frame (width x height) let through, or None for no limit.
        corrupt_slots: also yield the corrupt slots the sampler would have selected
            (``DecodedFrame.corrupt``; see :meth:`Sampler.covers`), in decode order among the
            good frames, so a caller can record them; by default they are only counted.
        backend: ``pyav``, or torchcodec on the CPU or a CUDA device for a file it can read
            exactly as PyAV does (:func:`~media.torchcodec_unsuitable`; the caller checks). It
            decodes the selected frames in chunks of ``batch`` and hands the rest of the file
            to PyAV if it fails (``backend_used`` and ``fallback`` tell).
        batch: frames torchcodec decodes per call.
        live: a live source's reconnect settings, ``(reconnects, backoff_s)``
            (:mod:`media._live`).

    A live source (:func:`~media.is_live`) is read by a :class:`~media._live.LiveFeed`: its
    frames are numbered from ``start_index`` (nothing is skipped: a stream cannot be rewound),
    carry their wall-clock time (Unix seconds, :mod:`media._live`) as ``time_s``, and the
    sampler's times (``target_fps``, ``start_s``, ``end_s``) count from the first frame this
    reader delivers.

    Raises:
        UnknownFrameRateError: the sampler selects by time but the video has neither
            increasing pts nor a frame rate.
    """

    def __init__(
        self,
        source: Source,
        info: VideoInfo,
        *,
        sampler: Sampler | None = None,
        start_index: int = 0,
        seek: bool = True,
        threads: int = 0,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_pixels: int | None = MAX_PIXELS,
        corrupt_slots: bool = False,
        backend: Backend = "pyav",
        batch: int = 8,
        live: tuple[int, float] = (5, 1.0),
    ) -> None:
        self._with_corrupt = corrupt_slots
        self._source, self._info, self._batch = source, info, batch
        #: The decoder that delivered the frames (PyAV after a torchcodec fallback).
        self.backend_used: Backend = backend
        #: Why torchcodec handed over to PyAV, or None.
        self.fallback: str | None = None
        self._sampler = sampler or Sampler(stride=1, target_fps=None, start_s=0.0, end_s=None)
        self.clock = FrameClock(info.time_source, info.time_base, info.start_pts, info.fps)
        self._live = is_live(os.fspath(source))
        self._origin: float | None = None  # a live reader's first frame time
        if self._live:
            options = LiveOptions(threads, open_timeout_s, read_timeout_s, max_pixels, *live)
            self._feed: Feed | LiveFeed = LiveFeed(source, start_index=start_index, options=options)
        elif self._sampler.uses_time and info.time_source == "rate" and info.fps is None:
            msg = (
                f"{info.source!r}: target_fps/start_s/end_s need frame times, but the video has "
                "neither increasing pts nor a frame rate; use stride instead"
            )
            raise UnknownFrameRateError(msg)
        else:
            self._feed = Feed(
                source,
                seekable=seek and info.seekable,
                start_index=start_index,
                start_s=self._sampler.start_s,
                clock=self.clock,
                options=FeedOptions(threads, open_timeout_s, read_timeout_s, max_pixels),
            )
        self._start = start_index
        self._shape = (info.height, info.width, 3)
        self._orientation = orientation_from(info)
        self._corrupt_mark = 0
        #: Decode index of the last frame read, selected or not (-1 before the first).
        self.last_index = -1

    @property
    def n_corrupt(self) -> int:
        """Corrupt frames and failed packets so far (restarts at 0 after a failed seek)."""
        return self._feed.n_corrupt

    def take_corrupt(self) -> int:
        """Corrupt frames counted since the previous call, or since the start point."""
        taken = max(0, self._feed.n_corrupt - self._corrupt_mark)
        self._corrupt_mark = self._feed.n_corrupt
        return taken

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self.backend_used == "pyav":
            yield from self._decoded(self._sampler)
            return
        device = self.backend_used.removeprefix("torchcodec-")
        try:
            frames = TorchcodecFrames(
                self._source, self._info, device=device, threads=self._feed.threads
            )
        except TorchcodecMismatch as e:
            logger.warning("%s; decoding with PyAV", e)
            self.fallback, self.backend_used = str(e), "pyav"
            yield from self._decoded(self._sampler)
            return
        yield from self._from_torchcodec(frames)

    def _from_torchcodec(self, frames: TorchcodecFrames) -> Iterator[DecodedFrame]:
        """Frames torchcodec decodes, only the selected ones, a chunk at a time; on failure
        the rest comes from PyAV, from the first frame not yet delivered (an exact resume)."""
        chosen: list[tuple[int, int, float]] = []
        for index, pts in enumerate(frames.pts):
            self.last_index = index
            time_s = self.clock.time_of(index, pts)
            choice = self._sampler.choose(index, time_s)
            if choice is Choice.STOP:
                break
            if index >= self._start and choice is Choice.KEEP:
                chosen.append((index, pts, time_s))
            if len(chosen) == self._batch:
                yield from self._chunk(frames, chosen)
                if self.fallback is not None:
                    return
                chosen = []
        if chosen:
            yield from self._chunk(frames, chosen)

    def _chunk(
        self, frames: TorchcodecFrames, chosen: list[tuple[int, int, float]]
    ) -> Iterator[DecodedFrame]:
        try:
            rgb = frames.frames([index for index, _, _ in chosen])
        except TorchcodecMismatch as e:
            logger.warning("%s; decoding on with PyAV from frame %d", e, chosen[0][0])
            self.fallback, self.backend_used = str(e), "pyav"
            self._start = chosen[0][0]
            self._feed = self._feed.restarted(chosen[0][0])
            self._corrupt_mark = 0
            yield from self._decoded(self._sampler.fresh())
            return
        for (index, pts, time_s), pixels in zip(chosen, rgb, strict=True):
            yield DecodedFrame(index, pts, time_s, pixels, self._shape, self._orientation)

    def _decoded(self, sampler: Sampler) -> Iterator[DecodedFrame]:
        """The selected frames of the PyAV feed, and its corrupt slots."""
        last = -1
        for index, frame in self._feed:
            if index <= last:  # the feed restarted from 0 after an abandoned seek
                sampler = sampler.fresh()
            yield from self._corrupt(sampler)  # slots before this frame
            last = self.last_index = index
            time_s, choice_s = self._times(index, frame.pts)
            choice = sampler.choose(index, choice_s)
            if choice is Choice.STOP:
                return
            if index < self._start:
                self._corrupt_mark = self._feed.n_corrupt  # corrupt before the start point
                continue
            if choice is Choice.SKIP:
                continue
            yield DecodedFrame(index, frame.pts, time_s, frame, self._shape, self._orientation)
        yield from self._corrupt(sampler)  # slots after the last good frame

    def _times(self, index: int, pts: int | None) -> tuple[float, float]:
        """A frame's ``time_s`` and the time the sampler judges it by."""
        if not isinstance(self._feed, LiveFeed):
            time_s = self.clock.time_of(index, pts)
            return time_s, time_s
        wall = self._feed.wall_time
        if self._origin is None:
            self._origin = wall
        return wall, wall - self._origin

    def _corrupt(self, sampler: Sampler) -> Iterator[DecodedFrame]:
        """The corrupt slots recorded since the last call that ``sampler`` would select."""
        for index, pts in self._feed.take_slots():
            if not self._with_corrupt or index < self._start:
                continue
            time_s, choice_s = self._times(index, pts)
            if sampler.covers(index, choice_s):
                yield DecodedFrame(index, pts, time_s, None, self._shape, self._orientation)


def read_frames(
    source: Source,
    *,
    stride: int = 1,
    max_side: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
    threads: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Every ``stride``-th frame of ``source`` (decode order) as upright RGB.

    The source is probed before this returns, so unreadable input raises here; frames are
    decoded lazily as the iterator is consumed.

    Args:
        source: local path or URL.
        stride: keep frames whose decode index is a multiple of ``stride``.
        max_side: downscale so the longer side is at most this (None: the coded size).
        max_pixels: largest frame (width x height) accepted, or None for no limit.
        threads: decoder threads; 0 lets FFmpeg choose.

    Returns:
        An iterator of ``(decode index, (H, W, 3) uint8 RGB)``, each array its own.

    Raises:
        DecodeError: a subclass naming the source and the cause (see :func:`probe_video`).
    """
    info = probe_video(
        source,
        max_side=max_side,
        threads=threads,
        open_timeout_s=OPEN_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
        max_pixels=max_pixels,
    )
    sampler = Sampler(stride=stride, target_fps=None, start_s=0.0, end_s=None)
    reader = VideoReader(source, info, sampler=sampler, threads=threads, max_pixels=max_pixels)
    return ((frame.index, frame.rgb()) for frame in reader)
