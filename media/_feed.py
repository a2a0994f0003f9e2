"""The decoded frames of one PyAV pass over a source, from decode index 0 or from an exact
keyframe seek (abandoned, with a decode from 0, when the seek does not land as planned)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av

from media._sampling import FrameClock
from media._seek import plan_seek, seek_packets, verified
from media._source import display_name, open_container
from media._stream import FrameReader, iter_packets, video_stream
from media.errors import NoSeekPlan, SeekMismatch

__all__ = ["Feed", "FeedOptions"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class FeedOptions:
    threads: int
    open_timeout_s: float
    read_timeout_s: float
    max_pixels: int | None


class Feed:
    """Decoded frames (index, frame) of one pass, from index 0 or from an exact seek point."""

    def __init__(
        self,
        source: Source,
        *,
        seekable: bool,
        start_index: int,
        start_s: float,
        clock: FrameClock,
        options: FeedOptions,
    ) -> None:
        self._source, self._name = source, display_name(source)
        self._seekable, self._start_index, self._start_s = seekable, start_index, start_s
        self._clock, self._options = clock, options
        self.threads = options.threads
        self._reader: FrameReader | None = None
        self._slots_of: FrameReader | None = None  # whose corrupt_slots take_slots reads
        self._slots_taken = 0

    @property
    def n_corrupt(self) -> int:
        return 0 if self._reader is None else self._reader.n_corrupt

    def restarted(self, start_index: int) -> Feed:
        """A feed of the same source and settings from decode index ``start_index``."""
        return Feed(
            self._source,
            seekable=self._seekable,
            start_index=start_index,
            start_s=self._start_s,
            clock=self._clock,
            options=self._options,
        )

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
