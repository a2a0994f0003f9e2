"""The long-running service: take jobs from the Redis queue and run several at once on Ray.

Each job runs in its own thread on the shared Ray cluster; Sapiens actors come from one
``InferPool`` so a model is loaded once for all jobs. A heartbeat thread keeps the leases alive;
a lost lease or a cancel request stops the job at its next batch. Progress (the store's commit
watermark) is mirrored to the job record.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from flows.errors import SpecError
from flows.plan import plan_job
from flows.run import InferPool, run_on_ray
from flows.spec import JobSpec
from storage import Coordinator, HeartbeatThread, JobLease

__all__ = ["JobService", "default_worker_id"]

logger = logging.getLogger(__name__)


def default_worker_id(prefix: str = "serve") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


class JobService:
    """Consumes the queue of ``coord`` and runs up to ``max_jobs`` jobs at a time.

    Args:
        coord: the job registry and queue.
        worker_id: this worker's queue consumer name (unique per process).
        max_jobs: jobs run concurrently.
        device: force ``cpu``/``cuda`` for the Sapiens actors (default: automatic).
        address: Ray cluster to join (default: ``RAY_ADDRESS`` or a local cluster).
    """

    def __init__(
        self,
        coord: Coordinator,
        *,
        worker_id: str | None = None,
        max_jobs: int = 2,
        device: str | None = None,
        address: str | None = None,
    ) -> None:
        self.coord = coord
        self.worker_id = worker_id or default_worker_id()
        self.max_jobs = max_jobs
        self.device = device
        self.address = address
        self.pool = InferPool()
        self._threads: dict[str, threading.Thread] = {}
        ttl = coord.config.heartbeat_ttl_s
        self.heartbeat = HeartbeatThread(coord, self.worker_id, interval_s=ttl / 3)

    def serve(self, *, until: Callable[[], bool] | None = None, poll_ms: int = 500) -> None:
        """Claim and run jobs until ``until()`` is true (forever when None)."""
        from flows.run import ensure_ray

        ensure_ray(self.address)
        self.heartbeat.start()
        try:
            while until is None or not until():
                self._reap()
                if len(self._threads) >= self.max_jobs:
                    time.sleep(poll_ms / 1000)
                    continue
                lease = self.coord.claim(self.worker_id, block_ms=poll_ms)
                if lease is not None:
                    self._start(lease)
            for thread in list(self._threads.values()):
                thread.join()
        finally:
            self.heartbeat.stop()

    def _reap(self) -> None:
        for job_id, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[job_id]

    def _start(self, lease: JobLease) -> None:
        self.heartbeat.hold(lease)
        thread = threading.Thread(
            target=self._run, args=(lease,), name=f"job-{lease.job_id}", daemon=True
        )
        self._threads[lease.job_id] = thread
        thread.start()

    def _run(self, lease: JobLease) -> None:
        try:
            self._run_job(lease)
        except Exception as e:  # a job's own failure must never take the service down
            logger.exception("job %s crashed the runner", lease.job_id)
            self._safely(self.coord.fail, lease, f"{type(e).__name__}: {e}")
        finally:
            self.heartbeat.release(lease)

    def _run_job(self, lease: JobLease) -> None:
        try:
            spec = JobSpec.from_dict({**lease.spec, "job_id": lease.job_id})  # registry id wins
        except SpecError as e:
            self.coord.fail(lease, f"invalid job spec: {e}")
            return
        plan = plan_job(spec, device=self.device)

        def progress(committed: int, decoded: int) -> None:
            self._safely(
                self.coord.progress,
                lease,
                committed_frames=committed,
                counters={"decoded_frames": decoded},
            )

        def should_stop() -> bool:
            if self.heartbeat.lost(lease.job_id):
                return True
            return self.coord.get(lease.job_id).cancel_requested

        outcome = run_on_ray(
            plan,
            progress=progress,
            should_stop=should_stop,
            pool=self.pool,
            resume=lease.attempt > 1,
        )
        if outcome.state == "succeeded":
            self.coord.progress(lease, committed_frames=outcome.frames)  # the final tail
            self.coord.complete(
                lease, result={"frames": outcome.frames, "store": outcome.store_url}
            )
        elif outcome.state == "cancelled":
            if not self.heartbeat.lost(lease.job_id):
                self.coord.confirm_cancel(lease)
        else:
            self.coord.fail(lease, outcome.error or "failed")
        logger.info("job %s %s (%d frames)", lease.job_id, outcome.state, outcome.frames)

    @staticmethod
    def _safely(fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # bookkeeping must not stop the job; the next heartbeat retries
            logger.warning(
                "coordination call %s failed", getattr(fn, "__name__", fn), exc_info=True
            )
