"""The decoded frames of a live source (RTSP, RTMP, SRT, UDP...), reconnecting when it drops.

A live stream has no end that can be told apart from a dropped connection (a server that is
stopped ends the stream as cleanly as one that finished), so every end of a connection, and
every network error, is met with a reconnect: up to ``reconnects`` attempts in a row, the
``n``-th after ``backoff_s * 2**n`` seconds (at most ``MAX_BACKOFF_S``). A frame decoded resets
the count. When every attempt fails, :class:`~media.errors.SourceUnreachableError` says so in
one line; the frames delivered before it stand.

Frames are numbered by one decode counter across connections (the first frame of the feed is
``start_index``: a live source cannot be rewound, so a resumed job numbers the frames it gets
from where it stopped instead of skipping any), and each gets a wall-clock time in Unix seconds
(:attr:`LiveFeed.wall_time`), since stream timestamps restart with every connection: the
time its connection began to open plus the stream time (pts) since the connection's first
frame, never later than the frame's own arrival and never before the previous frame's time
(a frame without pts counts as at the connection's start). FFmpeg hands over the first
second or two of a connection at once, as it reads them to learn the stream, so arrival
times alone would bunch them; stream time keeps their spacing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av

from media._source import display_name, open_container
from media._stream import FrameReader, iter_packets, video_stream
from media.errors import SourceUnreachableError

__all__ = ["MAX_BACKOFF_S", "LiveFeed", "LiveOptions"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str]

#: Longest wait between two reconnect attempts.
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class LiveOptions:
    """How a live feed reads and reconnects.

    Args:
        threads: decoder threads (0: FFmpeg decides).
        open_timeout_s: seconds a connection may take to open.
        read_timeout_s: seconds a connection may stay silent.
        max_pixels: largest frame (width x height) let through, or None.
        reconnects: attempts in a row after the stream drops before the feed fails.
        backoff_s: wait before the first attempt; doubled for each further one.
    """

    threads: int
    open_timeout_s: float
    read_timeout_s: float
    max_pixels: int | None
    reconnects: int
    backoff_s: float


class LiveFeed:
    """Decoded frames ``(index, frame)`` of a live source, across reconnects.

    Args:
        source: the stream's URL.
        start_index: decode index of the first frame delivered.
        options: read and reconnect settings.
        sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(
        self,
        source: Source,
        *,
        start_index: int,
        options: LiveOptions,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._source, self._name = source, display_name(source)
        self._start_index, self._options, self._sleep = start_index, options, sleep
        self.threads = options.threads
        self._slots: list[tuple[int, int | None]] = []
        self._slots_taken = 0
        self._corrupt_before = 0  # corrupt frames of the connections before the current one
        self._reader: FrameReader | None = None
        self._reader_slots = 0  # slots of the current reader already moved to _slots
        #: Wall-clock time (Unix seconds) of the last frame delivered (see the module rule).
        self.wall_time = 0.0
        self._opened = 0.0  # when the current connection began to open
        self._origin: int | None = None  # pts of the current connection's first frame
        #: Connections made after the first (the stream dropped and came back).
        self.reconnected = 0

    @property
    def n_corrupt(self) -> int:
        current = 0 if self._reader is None else self._reader.n_corrupt
        return self._corrupt_before + current

    def restarted(self, start_index: int) -> LiveFeed:
        """A feed of the same stream and settings numbering its frames from ``start_index``."""
        return LiveFeed(
            self._source, start_index=start_index, options=self._options, sleep=self._sleep
        )

    def take_slots(self) -> list[tuple[int, int | None]]:
        """Corrupt slots ``(index, pts)`` recorded since the last call."""
        if self._reader is not None:
            self._slots[len(self._slots) :] = self._reader.corrupt_slots[self._reader_slots :]
            self._reader_slots = len(self._reader.corrupt_slots)
        new = self._slots[self._slots_taken :]
        self._slots_taken = len(self._slots)
        return new

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        next_index, failures, cause = self._start_index, 0, "the stream ended"
        while True:
            if failures:
                if failures > self._options.reconnects:
                    self._give_up(next_index, cause)
                delay = min(self._options.backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S)
                logger.warning(
                    "%s: %s at decode index %d; reconnecting in %.1f s (attempt %d of %d)",
                    self._name, cause, next_index, delay, failures, self._options.reconnects,
                )  # fmt: skip
                self._sleep(delay)
            try:
                for index, frame in self._connection(next_index, reconnect=failures > 0):
                    self._stamp(frame)
                    next_index, failures = index + 1, 0
                    yield index, frame
                next_index = self._closed(next_index)
                cause = "the stream ended"
            except SourceUnreachableError as e:
                next_index = self._closed(next_index)
                cause = str(e)
            failures += 1

    def _stamp(self, frame: av.VideoFrame) -> None:
        """Set :attr:`wall_time` for ``frame``, just out of the decoder."""
        now, pts, base = time.time(), frame.pts, frame.time_base
        stamp = self._opened  # a frame without pts: its connection's start
        if pts is not None and base:
            if self._origin is None:
                self._origin = pts
            stamp = self._opened + float((pts - self._origin) * base)
        self.wall_time = max(min(stamp, now), self.wall_time)

    def _connection(
        self, first_index: int, *, reconnect: bool
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """The frames of one connection, numbered from ``first_index``."""
        o, self._opened = self._options, time.time()
        container = open_container(
            self._source, open_timeout_s=o.open_timeout_s, read_timeout_s=o.read_timeout_s
        )
        with container:
            stream = video_stream(container, self._name, threads=o.threads)
            self._origin = None
            if reconnect:
                self.reconnected += 1
                logger.info("%s: reconnected at decode index %d", self._name, first_index)
            self._reader = FrameReader(
                iter_packets(container, stream, self._name),
                first_index=first_index,
                name=self._name,
                max_pixels=o.max_pixels,
            )
            self._reader_slots = 0
            yield from self._reader

    def _closed(self, next_index: int) -> int:
        """Fold the ended connection's counts in; returns the next decode index."""
        reader, self._reader = self._reader, None
        if reader is None:  # the connection never opened
            return next_index
        self._slots += reader.corrupt_slots[self._reader_slots :]
        self._corrupt_before += reader.n_corrupt
        return reader.next_index

    def _give_up(self, index: int, cause: str) -> None:
        o = self._options
        msg = (
            f"live stream {self._name!r} did not come back after {o.reconnects} reconnect "
            f"attempts (from decode index {index}; last: {cause}); check that the server is up"
        )
        raise SourceUnreachableError(msg)
