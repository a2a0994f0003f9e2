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

from media._image import Orientation, to_rgb
from media._info import VideoInfo
from media._probe import orientation_from, probe_video
from media._sampling import Choice, FrameClock, Sampler
from media._seek import plan_seek, seek_packets, verified
from media._source import OPEN_TIMEOUT_S, READ_TIMEOUT_S, display_name, open_container
from media._stream import MAX_PIXELS, FrameReader, iter_packets, video_stream
from media.errors import NoSeekPlan, SeekMismatch, UnknownFrameRateError

__all__ = ["DecodedFrame", "VideoReader", "read_frames"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One selected frame: its decode index, pts and time, and its pixels on demand.

    Args:
        index: decode index (0 = first decoded frame of the video).
        pts: presentation timestamp in the stream's time base, or None.
        time_s: seconds since the first frame (see :class:`~media.FrameClock`).

    A corrupt slot (``corrupt``: its packet failed to decode or the decoder flagged the frame)
    has no pixels; :meth:`rgb` gives black.
    """

    index: int
    pts: int | None
    time_s: float
    _frame: av.VideoFrame | None
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
    ) -> None:
        self._with_corrupt = corrupt_slots
        self._sampler = sampler or Sampler(stride=1, target_fps=None, start_s=0.0, end_s=None)
        self.clock = FrameClock(info.time_source, info.time_base, info.start_pts, info.fps)
        if self._sampler.uses_time and info.time_source == "rate" and info.fps is None:
            msg = (
                f"{info.source!r}: target_fps/start_s/end_s need frame times, but the video has "
                "neither increasing pts nor a frame rate; use stride instead"
            )
            raise UnknownFrameRateError(msg)
        self._feed = _Feed(
            source,
            seekable=seek and info.seekable,
            start_index=start_index,
            start_s=self._sampler.start_s,
            clock=self.clock,
            options=_Options(threads, open_timeout_s, read_timeout_s, max_pixels),
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
        sampler, last = self._sampler, -1
        for index, frame in self._feed:
            if index <= last:  # the feed restarted from 0 after an abandoned seek
                sampler = sampler.fresh()
            yield from self._corrupt(sampler)  # slots before this frame
            last = self.last_index = index
            time_s = self.clock.time_of(index, frame.pts)
            choice = sampler.choose(index, time_s)
            if choice is Choice.STOP:
                return
            if index < self._start:
                self._corrupt_mark = self._feed.n_corrupt  # corrupt before the start point
                continue
            if choice is Choice.SKIP:
                continue
            yield DecodedFrame(index, frame.pts, time_s, frame, self._shape, self._orientation)
        yield from self._corrupt(sampler)  # slots after the last good frame

    def _corrupt(self, sampler: Sampler) -> Iterator[DecodedFrame]:
        """The corrupt slots recorded since the last call that ``sampler`` would select."""
        for index, pts in self._feed.take_slots():
            if not self._with_corrupt or index < self._start:
                continue
            time_s = self.clock.time_of(index, pts)
            if sampler.covers(index, time_s):
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


@dataclass(frozen=True, slots=True)
class _Options:
    threads: int
    open_timeout_s: float
    read_timeout_s: float
    max_pixels: int | None


class _Feed:
    """Decoded frames (index, frame) of one pass, from index 0 or from an exact seek point."""

    def __init__(
        self,
        source: Source,
        *,
        seekable: bool,
        start_index: int,
        start_s: float,
        clock: FrameClock,
        options: _Options,
    ) -> None:
        self._source, self._name = source, display_name(source)
        self._seekable, self._start_index, self._start_s = seekable, start_index, start_s
        self._clock, self._options = clock, options
        self._reader: FrameReader | None = None
        self._slots_of: FrameReader | None = None  # whose corrupt_slots take_slots reads
        self._slots_taken = 0

    @property
    def n_corrupt(self) -> int:
        return 0 if self._reader is None else self._reader.n_corrupt

    def take_slots(self) -> list[tuple[int, int | None]]:
        """Corrupt slots ``(index, pts)`` of the current pass recorded since the last call."""
        if self._reader is None:
            return []
        reader = self._reader
        if reader is not self._slots_of:
            self._slots_of, self._slots_taken = reader, 0
        new = reader.corrupt_slots[self._slots_taken :]
        self._slots_taken += len(new)
        return new

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        options = self._options
        container = open_container(
            self._source,
            open_timeout_s=options.open_timeout_s,
            read_timeout_s=options.read_timeout_s,
        )
        try:
            return container, video_stream(container, self._name, threads=options.threads)
        except BaseException:
            container.close()
            raise

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        skipping = self._start_index > 0 or self._start_s > 0
        if skipping and self._seekable:
            try:
                yield from self._from_seek()
                return
            except NoSeekPlan:
                logger.debug("%s: no exact seek point; decoding from 0", self._name)
            except SeekMismatch as e:
                logger.info("%s: resume seek abandoned (%s); decoding from 0", self._name, e)
        container, stream = self._open()
        with container:
            self._reader = FrameReader(
                iter_packets(container, stream, self._name),
                first_index=0,
                name=self._name,
                max_pixels=self._options.max_pixels,
            )
            yield from self._reader

    def _from_seek(self) -> Iterator[tuple[int, av.VideoFrame]]:
        container, stream = self._open()
        with container:
            plan = plan_seek(
                container,
                stream,
                start_index=self._start_index,
                start_s=self._start_s,
                clock=self._clock,
                name=self._name,
            )
            if plan is None:
                raise NoSeekPlan(self._name)
            packets = seek_packets(container, stream, plan, self._name)
            logger.debug("%s: seeked to keyframe at decode index %d", self._name, plan.key.count)
            self._reader = FrameReader(
                packets,
                first_index=plan.key.count,
                name=self._name,
                max_pixels=self._options.max_pixels,
            )
            yield from verified(self._reader, plan)
