"""The long-running service: take jobs from the Redis queue and run several at once on Ray.

Each job runs in its own thread on the shared Ray cluster; Sapiens actors come from one
``InferPool`` so a model is loaded once for all jobs. A heartbeat thread keeps the leases alive;
a lost lease or a cancel request stops the job at its next batch. Progress (the store's commit
watermark) is mirrored to the job record.

Every ``scale_interval_s`` the service sizes its actor pools from the backlog (frames still to
analyse of its running jobs and of the queued ones, at the measured per-actor throughput; see
``flows.pool``), logs each change, exports the pool sizes and per-actor load through
``ray.util.metrics``, and publishes them with its heartbeat in Redis (``sapiens-stream workers``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.infer import InferSpec, ModelSpec
from flows.errors import SpecError, one_line
from flows.metrics import metric
from flows.plan import plan_job
from flows.pool import InferPool, ScalePolicy, desired_actors
from flows.run import MAX_IN_FLIGHT, run_on_ray
from flows.scaling import model_tag
from flows.spec import JobSpec
from flows.stagepool import StagePolicy, StagePool
from flows.watch import DEFAULT_STALL_S, StopReason
from models import CheckpointError, WeightsPolicy
from storage import CoordinationError, Coordinator, HeartbeatThread, JobLease, reopen_failed

__all__ = ["JobService", "default_worker_id"]

logger = logging.getLogger(__name__)


def default_worker_id(prefix: str = "serve") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Running:
    """What the scaler needs to know of a running job."""

    infer: InferSpec | None  # None: split placement, which does not use the pool
    expected: int | None = None
    committed: int = 0
    decoded: int = 0


class JobService:
    """Consumes the queue of ``coord`` and runs up to ``max_jobs`` jobs at a time.

    Args:
        coord: the job registry and queue.
        worker_id: this worker's queue consumer name (unique per process).
        max_jobs: jobs run concurrently.
        device: force ``cpu``/``cuda`` for the Sapiens actors (default: automatic).
        address: Ray cluster to join (default: ``RAY_ADDRESS`` or a local cluster).
        policy: sizes of the shared Sapiens actor pools (default: one actor per model).
        stage_policy: sizes of the pooled decode, person and writer actors.
        scale_interval_s: period of the pool sizing.
        stall_s: a job that makes no progress for this long fails (None: never).
        weights_policy: where jobs may load checkpoints from (default: the official hub
            organisation and the local hub cache); a job naming another place fails.
        trust_weights: skip that check (``run``: its user names their own files).
    """

    def __init__(
        self,
        coord: Coordinator,
        *,
        worker_id: str | None = None,
        max_jobs: int = 2,
        device: str | None = None,
        address: str | None = None,
        policy: ScalePolicy | None = None,
        stage_policy: StagePolicy | None = None,
        scale_interval_s: float = 2.0,
        stall_s: float | None = DEFAULT_STALL_S,
        weights_policy: WeightsPolicy | None = None,
        trust_weights: bool = False,
    ) -> None:
        self.coord = coord
        self.worker_id = worker_id or default_worker_id()
        self.max_jobs = max_jobs
        self.device = device
        self.address = address
        self.pool = InferPool(policy)
        self.stages = StagePool(stage_policy)
        self.scale_interval_s = scale_interval_s
        self.stall_s = stall_s
        self.weights_policy = weights_policy or WeightsPolicy()
        self.trust_weights = trust_weights
        self.retry_s = 120.0  # how long outcomes are retried while Redis is unreachable
        self.decisions: list[dict[str, Any]] = []  # pool size changes, newest last (bounded)
        self._running: dict[str, _Running] = {}
        self._seen_frames: list[int] = []  # expected sizes of recent jobs, for queued ones
        self._next_scale = 0.0
        self._threads: dict[str, threading.Thread] = {}
        self._tokens: dict[str, int] = {}  # job -> token of its newest lease here
        self._slot_freed = threading.Event()
        ttl = coord.config.heartbeat_ttl_s
        self.heartbeat = HeartbeatThread(coord, self.worker_id, interval_s=ttl / 3)

    def serve(self, *, until: Callable[[], bool] | None = None, poll_ms: int = 500) -> None:
        """Claim and run jobs until ``until()`` is true (forever when None)."""
        from flows.raylocal import ensure_ray, exit_on_sigterm

        ensure_ray(self.address, store_bytes=self._store_bytes())
        exit_on_sigterm()
        self.heartbeat.start()
        try:
            self.stages.warm()
            while until is None or not until():
                self._reap()
                if time.monotonic() >= self._next_scale:
                    self._next_scale = time.monotonic() + self.scale_interval_s
                    self._safely(self.autoscale)
                if len(self._threads) >= self.max_jobs:
                    # Woken as soon as a job ends, so its slot goes to the next job at once.
                    if self._slot_freed.wait(poll_ms / 1000):
                        self._slot_freed.clear()
                        for thread in list(self._threads.values()):
                            thread.join(0.01)  # the one that signalled is returning
                    continue
                try:
                    lease = self.coord.claim(self.worker_id, block_ms=poll_ms)
                except Exception:  # Redis away: running jobs go on; claim again once it is back
                    logger.warning("could not claim from the queue", exc_info=True)
                    time.sleep(poll_ms / 1000)
                    continue
                if lease is not None:
                    self._start(lease)
            for thread in list(self._threads.values()):
                thread.join()
        finally:
            self.heartbeat.stop()
            self.pool.shutdown()
            self.stages.shutdown()

    def run_one(self, lease: JobLease) -> None:
        """Run the job of ``lease`` (from :meth:`Coordinator.start_direct`) to its end here,
        heartbeating its lease, without claiming anything from the queue (a job submitted to
        a cluster through its Jobs API runs so)."""
        from flows.raylocal import ensure_ray, exit_on_sigterm

        ensure_ray(self.address, store_bytes=self._store_bytes())
        exit_on_sigterm()
        self.heartbeat.start()
        try:
            self._start(lease)
            self._threads[lease.job_id].join()
        finally:
            self.heartbeat.stop()
            self.pool.shutdown()
            self.stages.shutdown()

    def _reap(self) -> None:
        for job_id, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[job_id]

    def _start(self, lease: JobLease) -> None:
        # A job this service still runs can come back to it (its heartbeats failed for longer
        # than the TTL, and its own claim loop reclaimed it). The new claim fenced the old
        # lease: the old thread stops, and the new one starts only once it has ended, so one
        # job never runs in two threads here.
        previous = self._threads.get(lease.job_id)
        self._tokens[lease.job_id] = lease.token
        self.heartbeat.hold(lease)
        thread = threading.Thread(
            target=self._run, args=(lease, previous), name=f"job-{lease.job_id}", daemon=True
        )
        self._threads[lease.job_id] = thread
        thread.start()

    def _stop_reason(self, lease: JobLease) -> StopReason | None:
        """Why the job of ``lease`` must stop now, if it must."""
        if self.heartbeat.lost(lease.job_id) or self._tokens.get(lease.job_id) != lease.token:
            return "lease lost"
        try:
            return "cancelled" if self.coord.get(lease.job_id).cancel_requested else None
        except Exception:  # Redis briefly away: keep going; the lease check above decides
            logger.warning("job %s: could not read its cancel flag", lease.job_id)
            return None

    def _run(self, lease: JobLease, previous: threading.Thread | None = None) -> None:
        try:
            if previous is not None and previous.is_alive():
                logger.warning(
                    "job %s came back to this service; its old run stops first", lease.job_id
                )
                previous.join()
            self._run_job(lease)
        except Exception as e:  # a job's own failure must never take the service down
            logger.exception("job %s crashed the runner", lease.job_id)
            self._safely(self.coord.fail, lease, one_line(f"{type(e).__name__}: {e}"))
        finally:
            self.heartbeat.release(lease)
            if self._tokens.get(lease.job_id) == lease.token:
                del self._tokens[lease.job_id]
            self._slot_freed.set()

    def _run_job(self, lease: JobLease) -> None:
        try:
            spec = JobSpec.from_dict({**lease.spec, "job_id": lease.job_id})  # registry id wins
        except SpecError as e:
            self.coord.fail(lease, one_line(f"invalid job spec: {e}"))
            return
        if not self.trust_weights:
            try:
                self._check_weights(spec.model.weights)
                if spec.detector == "rtdetr" and spec.detection.weights is not None:
                    self.weights_policy.check(spec.detection.weights)
            except CheckpointError as e:
                self.coord.fail(lease, one_line(f"CheckpointError: {e}"))
                return
        plan = plan_job(spec, device=self.device)
        if lease.retries:  # a failed or cancelled job again: it continues its store
            reopen_failed(plan.store_url, fence=lease.token)
        running = _Running(infer=plan.infer if spec.placement != "split" else None)
        self._running[lease.job_id] = running

        def on_video(video: Any) -> None:
            running.expected = plan.expected_frames(video)
            if running.expected:
                self._seen_frames = [*self._seen_frames[-49:], running.expected]

        # The registry adds counters up: report only what is new, also across attempts.
        reported = {"decoded": self._safely_get_counter(lease.job_id, "decoded_frames")}

        def progress(committed: int, decoded: int) -> None:
            running.committed, running.decoded = committed, decoded
            new = max(0, decoded - reported["decoded"])
            reported["decoded"] += new
            self._safely(
                self.coord.progress,
                lease,
                committed_frames=committed,
                counters={"decoded_frames": new} if new else None,
            )

        try:
            outcome = run_on_ray(
                plan,
                progress=progress,
                should_stop=lambda: self._stop_reason(lease),
                pool=self.pool,
                resume=lease.attempt > 1 or lease.retries > 0,
                on_video=on_video,
                stall_s=self.stall_s,
                fence=lease.token,
                stages=self.stages,
            )
        finally:
            self._running.pop(lease.job_id, None)
        if outcome.state == "lost":
            logger.warning("job %s: lease lost; another owner runs it now", lease.job_id)
            return
        if outcome.state == "succeeded":
            self._retrying(self.coord.progress, lease, committed_frames=outcome.frames)
            result = {"frames": outcome.frames, "store": outcome.store_url}
            self._retrying(self.coord.complete, lease, result=result)
        elif outcome.state == "cancelled":
            if not self.heartbeat.lost(lease.job_id):
                self._retrying(self.coord.confirm_cancel, lease)
        else:
            self._retrying(self.coord.fail, lease, outcome.error or "failed")
        metric("jobs_finished").inc(tags={"outcome": outcome.state})
        logger.info("job %s %s (%d frames)", lease.job_id, outcome.state, outcome.frames)

    def _store_bytes(self) -> int:
        """Object store of a local cluster: the batches in flight of ``max_jobs`` jobs of the
        default settings (1080p, every task, batches of 8) at once."""
        from flows.raylocal import object_store_bytes

        typical = plan_job(JobSpec(source="typical.mp4", job_id="sizing")).batch_bytes()
        return object_store_bytes(typical, (MAX_IN_FLIGHT + 1) * self.max_jobs)

    def _check_weights(self, weights: str) -> None:
        """A job's weights must come from the allow-list: the directory it names, and every
        file in it (a link inside an allowed directory may point anywhere)."""
        self.weights_policy.check(weights)
        local = Path(weights.removeprefix("file://"))
        if weights != "hub" and local.is_dir():
            for entry in sorted(local.iterdir()):
                self.weights_policy.check(str(entry))

    # -- pool sizing -----------------------------------------------------------------------------
    def autoscale(self) -> list[dict[str, Any]]:
        """Size every actor pool from the backlog once; returns the changes made."""
        policy = self.pool.policy
        per_job = (
            round(sum(self._seen_frames) / len(self._seen_frames))
            if self._seen_frames
            else policy.default_job_frames
        )
        demand: dict[ModelSpec, list[int]] = {}  # model -> [jobs, backlog frames]
        for job in list(self._running.values()):
            if job.infer is None:
                continue
            total = max(job.expected or per_job, job.decoded)
            d = demand.setdefault(self.pool.register(job.infer), [0, 0])
            d[0] += 1
            d[1] += max(0, total - job.committed)
        queued = self.coord.list_jobs(state="queued", limit=1000)
        metric("jobs").set(len(queued), tags={"state": "queued"})
        metric("jobs").set(len(self._running), tags={"state": "running"})
        for rec in queued:
            try:
                spec = JobSpec.from_dict({**rec.spec, "job_id": rec.job_id})
            except SpecError:
                continue  # it will fail when claimed
            if spec.placement == "split":
                continue
            infer = plan_job(spec, device=self.device).infer
            d = demand.setdefault(self.pool.register(infer), [0, 0])
            d[0] += 1
            d[1] += per_job
        changes = []
        for key in {*demand, *self.pool.keys()}:
            jobs, backlog = demand.get(key, [0, 0])
            before = self.pool.size(key)
            target = desired_actors(
                policy, backlog_frames=backlog, jobs=jobs, fps_per_actor=self.pool.throughput(key)
            )
            added, removed = self.pool.scale(key, target)
            if added or removed:
                change = {
                    "time": time.time(),
                    "model": model_tag(key),
                    "before": before,
                    "target": target,
                    "after": self.pool.size(key),
                    "jobs": jobs,
                    "backlog_frames": backlog,
                }
                logger.info("autoscale %s", change)
                changes.append(change)
                metric("scale_events").inc(
                    1, tags={"model": change["model"], "direction": "up" if added else "down"}
                )
            metric("actors").set(self.pool.size(key), tags={"model": model_tag(key)})
            metric("actors_target").set(target, tags={"model": model_tag(key)})
        self.stages.scale()
        self.decisions = [*self.decisions, *changes][-100:]
        self.pool.request_resources()
        actors = self.pool.poll_stats()
        for a in actors:
            for name in ("busy_fraction", "fill"):
                metric(f"actor_{name}").set(a[name], tags={"actor": a["actor"]})
        self.heartbeat.set_info(
            {
                "jobs": sorted(self._running),
                "actors": actors,
                "decisions": self.decisions[-10:],
            }
        )
        return changes

    def _retrying(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Record a job's outcome, riding out a Redis outage of up to ``retry_s`` (a lost
        lease or a state already changed by others is final: it raises at once)."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.2
        while True:
            try:
                fn(*args, **kwargs)
                return
            except CoordinationError:
                raise
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                logger.warning("%s failed; retrying", getattr(fn, "__name__", fn), exc_info=True)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _safely_get_counter(self, job_id: str, name: str) -> int:
        try:
            return int(self.coord.get(job_id).counters.get(name, 0))
        except Exception:  # Redis away: count from zero; a counter may then run high
            return 0

    @staticmethod
    def _safely(fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # bookkeeping must not stop the job; the next heartbeat retries
            logger.warning(
                "coordination call %s failed", getattr(fn, "__name__", fn), exc_info=True
            )
