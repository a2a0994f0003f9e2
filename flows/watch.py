"""Deadlines for the driver of a job: nothing it waits for may block it forever.

Every blocking wait of a job's driver goes through one :class:`Watchdog`. While it waits, the
watchdog polls the job's stop check once a second (a cancel, a lost lease) and measures how long
the job has gone without progress: a batch decoded, a commit landing, a stage ready. Past
``stall_s`` the job fails with :class:`JobStalledError`, whose one-line message names what it
was waiting for; the caller then tears the job's processes down (a decode actor stuck in a read
of a FIFO, a stage that hangs, a dead connection).

Example::

    watch = Watchdog(job_id="j1", stall_s=600, should_stop=lambda: None)
    info = watch.get(decoder.video_info.remote(), "the video's facts")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from flows.errors import FlowError

__all__ = [
    "DEFAULT_STALL_S",
    "JobCancelledError",
    "JobStalledError",
    "LeaseLostStop",
    "StopCheck",
    "StopReason",
    "Watchdog",
]

DEFAULT_STALL_S = 600.0
"""A job that makes no progress for this long fails (``--stall-timeout-s``)."""

StopReason = Literal["cancelled", "lease lost"]
StopCheck = Callable[[], "StopReason | bool | None"]
"""Polled while a job runs: a reason (or True, meaning cancelled) stops the job."""


class JobCancelledError(FlowError):
    """The job was asked to stop; its store is marked failed with the reason ``cancelled``."""


class LeaseLostStop(JobCancelledError):
    """Another owner holds the job now: stop at once and leave its store alone."""


class JobStalledError(FlowError, TimeoutError):
    """The job made no progress for longer than its stall timeout."""


class Watchdog:
    """Bounded, cancellable waits on Ray object references for one job.

    Args:
        job_id: the job (for messages).
        stall_s: longest time without progress before the job fails; None waits forever
            (cancel is still honoured).
        should_stop: the job's stop check, polled about once a second.
    """

    def __init__(
        self, *, job_id: str, stall_s: float | None, should_stop: StopCheck | None
    ) -> None:
        if stall_s is not None and not stall_s > 0:
            msg = f"stall timeout must be positive (seconds), got {stall_s}"
            raise ValueError(msg)
        self.job_id = job_id
        self.stall_s = stall_s
        self._should_stop = should_stop
        self._last = time.monotonic()

    def progressed(self) -> None:
        """Record progress now: the stall clock starts again."""
        self._last = time.monotonic()

    def check_stop(self) -> None:
        """Raise if the job was asked to stop."""
        if self._should_stop is None:
            return
        reason = self._should_stop()
        if reason == "lease lost":
            raise LeaseLostStop(self.job_id)
        if reason:
            raise JobCancelledError(self.job_id)

    def wait(self, refs: Sequence[Any], what: str, *, num_returns: int = 1) -> tuple[list, list]:
        """``ray.wait`` for ``num_returns`` of ``refs``; a ready result counts as progress.

        Raises:
            JobCancelledError: the job was asked to stop (LeaseLostStop: its lease is lost).
            JobStalledError: nothing became ready within the stall timeout.
        """
        import ray

        pending = list(refs)
        while True:
            ready, rest = ray.wait(pending, num_returns=num_returns, timeout=1.0)
            if len(ready) >= num_returns:
                self.progressed()
                return ready, rest
            self.check_stop()
            idle = time.monotonic() - self._last
            if self.stall_s is not None and idle > self.stall_s:
                msg = (
                    f"job {self.job_id} made no progress for {idle:.0f} s while waiting for "
                    f"{what} (stall timeout {self.stall_s:g} s)"
                )
                raise JobStalledError(msg)

    def get(self, ref: Any, what: str) -> Any:
        """The value of ``ref``, waited for under the stall timeout and the stop check."""
        import ray

        self.wait([ref], what)
        return ray.get(ref)
