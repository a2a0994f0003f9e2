"""Progress on stderr for ``run``, ``wait`` and batch ``submit``: frames done, frames/s, ETA,
failures.

On a terminal a :class:`RichDisplay` draws live bars (rich); elsewhere (a log, a pipe, CI) a
:class:`LineDisplay` prints one plain line at most every ``every_s`` seconds and whenever a
job ends, and a last line at the end; ``--quiet`` prints nothing. Both take a clock, so what
they print can be tested with a fake one. Rates are measured over the last ``window_s``
seconds, so a job that resumes with most of its frames already committed does not show a
burst, and the ETA follows the current pace.

Example:
    >>> import io
    >>> t = [0.0]
    >>> out = io.StringIO()
    >>> display = LineDisplay(out, clock=lambda: t[0], every_s=5)
    >>> meter = RateMeter(clock=lambda: t[0])
    >>> def show(done):
    ...     display.show(Snapshot.of("job", meter, done=done, total=100, unit="frames"))
    >>> show(0); t[0] = 10.0; show(40); display.close()
    >>> print(out.getvalue(), end="")
    job: 0/100 frames, 0s elapsed
    job: 40/100 frames, 4.0 frames/s, ETA 15s, 10s elapsed
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = [
    "Display",
    "LineDisplay",
    "RateMeter",
    "RichDisplay",
    "Row",
    "Snapshot",
    "format_duration",
    "open_display",
]

Clock = Callable[[], float]
MAX_ROWS = 8  # per-job bars drawn at once on a terminal; the totals cover the rest


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``2h07m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class RateMeter:
    """Units per second over the last ``window_s`` seconds of a growing count."""

    def __init__(self, *, clock: Clock = time.monotonic, window_s: float = 30.0) -> None:
        self.clock, self.window_s = clock, window_s
        self.t0 = clock()
        self._samples: deque[tuple[float, int]] = deque()

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def rate(self, done: int) -> float | None:
        """Record ``done`` now; return the pace over the window (None before any progress)."""
        now = self.clock()
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t_old, old = self._samples[0]
        if now <= t_old or done <= old:
            return None
        return (done - old) / (now - t_old)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One job's own bar (terminal only)."""

    key: str
    done: int
    total: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """What a display shows at one moment.

    Args:
        label: what the progress is of (a job id, ``wait``, ``submit``).
        done: units done (frames committed, videos handled).
        total: units expected, or None while unknown.
        unit: ``frames`` or ``videos``.
        rate: units per second (None before any progress).
        elapsed_s: seconds since the display started.
        detail: counts that go with it, e.g. ``3/20 jobs done, 5 running``.
        failures: failed jobs (or videos that could not be queued).
        rows: bars of single jobs, drawn on a terminal only.
        milestone: a change worth a line of its own (a job ended), whatever the throttle.
    """

    label: str
    done: int
    total: int | None
    unit: str
    rate: float | None
    elapsed_s: float
    detail: str = ""
    failures: int = 0
    rows: tuple[Row, ...] = ()
    milestone: bool = False

    @classmethod
    def of(cls, label: str, meter: RateMeter, *, done: int, **more: Any) -> Snapshot:
        """A snapshot whose rate and elapsed time ``meter`` measures."""
        return cls(label=label, done=done, rate=meter.rate(done), elapsed_s=meter.elapsed(), **more)

    @property
    def eta_s(self) -> float | None:
        if self.total is None or not self.rate or self.done >= self.total:
            return None
        return (self.total - self.done) / self.rate

    def counts(self) -> str:
        return f"{self.done}/{self.total} {self.unit}" if self.total else f"{self.done} {self.unit}"

    def pace(self) -> list[str]:
        """Rate, ETA and failures, as the terminal columns and the plain line show them."""
        parts = []
        if self.rate is not None:
            parts.append(f"{self.rate:.1f} {self.unit}/s")
        if (eta := self.eta_s) is not None:
            parts.append(f"ETA {format_duration(eta)}")
        if self.failures:
            parts.append(f"{self.failures} failed")
        return parts

    def line(self) -> str:
        head = f"{self.label}: " + (f"{self.detail}; " if self.detail else "") + self.counts()
        return ", ".join([head, *self.pace(), f"{format_duration(self.elapsed_s)} elapsed"])


class Display(Protocol):
    def show(self, snapshot: Snapshot) -> None: ...

    def close(self) -> None: ...


class NullDisplay:
    """``--quiet``: nothing."""

    def show(self, snapshot: Snapshot) -> None:
        pass

    def close(self) -> None:
        pass


class LineDisplay:
    """Plain lines for logs and pipes: the first snapshot, then one at most every ``every_s``
    seconds or at a milestone, and the last one at :meth:`close` (if not already printed)."""

    def __init__(self, stream: TextIO, *, clock: Clock = time.monotonic, every_s: float = 10.0):
        self.stream, self.clock, self.every_s = stream, clock, every_s
        self._last_at: float | None = None
        self._last: Snapshot | None = None
        self._printed: Snapshot | None = None

    def show(self, snapshot: Snapshot) -> None:
        self._last = snapshot
        now = self.clock()
        due = self._last_at is None or now - self._last_at >= self.every_s
        if due or snapshot.milestone:
            self._print(snapshot, now)

    def _print(self, snapshot: Snapshot, now: float) -> None:
        print(snapshot.line(), file=self.stream, flush=True)
        self._last_at, self._printed = now, snapshot

    def close(self) -> None:
        if self._last is not None and self._last is not self._printed:
            self._print(self._last, self.clock())


class RichDisplay:
    """Live bars on a terminal: the totals, and one bar per job in ``rows`` (at most
    :data:`MAX_ROWS`). ``auto_refresh=False`` redraws only on :meth:`show` (tests)."""

    def __init__(
        self, stream: TextIO, *, clock: Clock = time.monotonic, auto_refresh: bool = True
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = Console(file=stream, force_terminal=True)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[pace]}"),
            console=console,
            get_time=clock,
            auto_refresh=auto_refresh,
            transient=False,
        )
        self._total: Any = None
        self._rows: dict[str, Any] = {}
        self._progress.start()

    def show(self, snapshot: Snapshot) -> None:
        p = self._progress
        pace = " · ".join([*snapshot.pace(), f"{format_duration(snapshot.elapsed_s)}"])
        label = snapshot.label + (f" ({snapshot.detail})" if snapshot.detail else "")
        if self._total is None:
            self._total = p.add_task(label, total=snapshot.total, pace=pace)
        p.update(self._total, description=label, total=snapshot.total, pace=pace)
        p.update(self._total, completed=snapshot.done)
        shown = {row.key: row for row in snapshot.rows[:MAX_ROWS]}
        for key in [k for k in self._rows if k not in shown]:
            p.remove_task(self._rows.pop(key))
        for key, row in shown.items():
            if key not in self._rows:
                self._rows[key] = p.add_task(f"  {key}", total=row.total, pace="")
            p.update(self._rows[key], total=row.total, completed=row.done)
        p.refresh()

    def close(self) -> None:
        self._progress.stop()


def open_display(
    *, quiet: bool, stream: TextIO | None = None, clock: Clock = time.monotonic
) -> Display:
    """Bars on a terminal, plain lines elsewhere, nothing with ``quiet``."""
    stream = sys.stderr if stream is None else stream
    if quiet:
        return NullDisplay()
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return RichDisplay(stream, clock=clock)
    return LineDisplay(stream, clock=clock)
