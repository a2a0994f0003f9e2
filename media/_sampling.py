"""Frame times and frame selection (stride, target fps, time range) of a video reader.

Both are pure functions of the decode index, the pts and the previous good frame's time, so a
resumed run that decodes at least one frame before its start selects exactly the frames of a
clean run from index 0.

Time rule (``FrameClock``):
    * ``"pts"`` mode, chosen by the probe when every frame of its window carries a pts and the
      pts strictly increase in decode output: ``time_s = (pts - start_pts) * time_base``, so the
      first frame is at 0 and variable frame rates are kept. A frame without pts falls back to
      ``index / fps``.
    * ``"rate"`` mode otherwise (missing or reordered pts, as AVI files give): ``time_s =
      index / fps`` with FFmpeg's guessed frame rate; NaN when no rate is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from fractions import Fraction

from media._info import TimeSource

__all__ = ["Choice", "FrameClock", "Sampler"]

_EPS = 1e-6  # absorbs float error at exact tick boundaries (t * fps == k)


@dataclass(frozen=True, slots=True)
class FrameClock:
    """Maps (decode index, pts) to seconds since the first frame, following the module rule."""

    mode: TimeSource
    time_base: Fraction | None
    start_pts: int | None
    fps: float | None

    def time_of(self, index: int, pts: int | None) -> float:
        """Seconds since the first frame for the frame at decode ``index`` with ``pts``."""
        if self.mode == "pts" and pts is not None and self.time_base is not None:
            return float((pts - (self.start_pts or 0)) * self.time_base)
        if self.fps:
            return index / self.fps
        return math.nan


class Choice(IntEnum):
    """What to do with one decoded frame."""

    SKIP = 0
    KEEP = 1
    STOP = 2  # the frame is at or past ``end_s``: no later frame can be selected


class Sampler:
    """Selects frames by decode index and time.

    Rules, applied in order to each good (non-corrupt) frame:
        1. ``time_s >= end_s`` -> STOP (times are assumed to grow; see the module rule).
        2. ``time_s < start_s`` -> SKIP.
        3. ``stride``: KEEP when ``index % stride == 0`` (multiples of the stride, so a resume
           keeps the same frames).
        4. ``target_fps``: KEEP when the frame opens a new tick, i.e. ``floor((t - start_s) *
           target_fps)`` is larger than that of the previous good frame; the first frame of the
           range is always kept.

    Args:
        stride: keep every stride-th frame (1 = all).
        target_fps: keep about this many frames per second, or None.
        start_s: first second of the range (inclusive).
        end_s: end of the range in seconds (exclusive), or None for the whole video.
    """

    def __init__(
        self, *, stride: int, target_fps: float | None, start_s: float, end_s: float | None
    ) -> None:
        self._stride = stride
        self._fps = target_fps
        self._start = start_s
        self._end = end_s
        self._prev_tick: float = -math.inf

    @property
    def start_s(self) -> float:
        """First second of the range (inclusive)."""
        return self._start

    @property
    def uses_time(self) -> bool:
        """Whether selection depends on frame times (target fps or a time range)."""
        return self._fps is not None or self._start > 0 or self._end is not None

    def fresh(self) -> Sampler:
        """A sampler with the same settings and no history (for a feed that restarts at 0)."""
        return Sampler(
            stride=self._stride, target_fps=self._fps, start_s=self._start, end_s=self._end
        )

    def covers(self, index: int, time_s: float) -> bool:
        """Whether a corrupt slot at decode ``index`` and ``time_s`` stands where a selected
        frame would be (same rules as :meth:`choose`; the state is not updated, so the next good
        frame of the same tick is still selected). A slot of unknown time is never placed by
        a time rule."""
        if self.uses_time and math.isnan(time_s):
            return False
        if (self._end is not None and time_s >= self._end) or time_s < self._start:
            return False
        if self._fps is not None:
            return self._tick(time_s) > self._prev_tick
        return index % self._stride == 0

    def choose(self, index: int, time_s: float) -> Choice:
        """Decide for the good frame at decode ``index`` and time ``time_s`` (updates state)."""
        if self._end is not None and time_s >= self._end:
            return Choice.STOP
        tick = self._tick(time_s)
        prev, self._prev_tick = self._prev_tick, tick
        if time_s < self._start:
            return Choice.SKIP
        if self._fps is not None:
            return Choice.KEEP if tick > prev else Choice.SKIP
        return Choice.KEEP if index % self._stride == 0 else Choice.SKIP

    def _tick(self, time_s: float) -> float:
        if self._fps is None:
            return 0.0
        if time_s < self._start:
            return -1.0
        return float(math.floor((time_s - self._start) * self._fps + _EPS))
