"""Running one job on Ray to its end: attempts, retries after a dead stage, and the outcome.

If a stage's process dies, the job restarts from its last checkpoint, saved with the store at or
below the commit watermark: decoding restarts at the checkpoint's source frame and tracking
from its saved state (so every track id equals a clean run's), inference and writing resume at
the watermark, and frames already committed are never written again. The actors of an attempt
are in :mod:`flows.topology`, its loop in :mod:`flows.drive`, its deadlines in
:mod:`flows.watch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flows.drive import Progress, drive
from flows.inline import JobOutcome
from flows.metrics import metric
from flows.outcome import failure_reason, mark_store_failed
from flows.ownactors import private_gpus
from flows.plan import JobPlan
from flows.pool import InferPool
from flows.raylocal import ensure_ray, object_store_bytes
from flows.stagepool import StagePolicy, StagePool, is_dead, stage_name
from flows.topology import JobActors, build_actors
from flows.watch import (
    DEFAULT_STALL_S,
    JobCancelledError,
    JobStalledError,
    LeaseLostStop,
    StopCheck,
    Watchdog,
)

__all__ = ["MAX_IN_FLIGHT", "JobCancelledError", "ensure_ray", "run_on_ray", "stage_name"]

logger = logging.getLogger(__name__)
OnVideo = Callable[[Any], None]
ShouldStop = StopCheck


#: Batches of a job between decode and commit (backpressure).
MAX_IN_FLIGHT = 3


def run_on_ray(
    plan: JobPlan,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    retries: int = 2,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    pool: InferPool | None = None,
    resume: bool = False,
    address: str | None = None,
    on_video: OnVideo | None = None,
    stall_s: float | None = DEFAULT_STALL_S,
    fence: int | None = None,
    stages: StagePool | None = None,
) -> JobOutcome:
    """Run ``plan``'s job to completion on Ray (local or ``address``).

    Args:
        plan: the job.
        max_in_flight: batches between decode and commit.
        retries: times a dead stage process is survived (the job resumes at its watermark).
        progress: called with (committed frames, decoded frames) as commits land.
        should_stop: polled about once a second; "cancelled" (or True) cancels the job and
            "lease lost" stops it without touching its store (a newer owner has it).
        pool: shared Sapiens actors (a service's); default: one private actor for this job.
        resume: continue an existing store of this job (after its previous owner died).
        address: Ray cluster to join.
        on_video: called with the source's ``VideoInfo`` once it is probed.
        stall_s: the job fails when nothing progresses for this long (None: never).
        fence: the claim's fencing token, recorded with the store and checked at every
            commit, so a stale owner can never write to it (None: unfenced).
        stages: the pooled decode, person and writer actors (a service's); default: a pool of
            one member each, made for this job and removed when it ends.

    An error raised by a stage (bad input, bad checkpoint) fails the job at once.
    """
    from storage import store_state

    ensure_ray(address, store_bytes=object_store_bytes(plan.batch_bytes(), max_in_flight + 1))
    t0 = time.perf_counter()
    job_id, url = plan.spec.job_id, plan.store_url
    state = store_state(url) if resume else None
    if state is not None and state.status == "complete":
        # A previous owner finished the store but died before recording it: nothing to redo.
        return JobOutcome(job_id=job_id, state="succeeded", store_url=url, frames=state.frames)
    watch = Watchdog(job_id=job_id, stall_s=stall_s, should_stop=should_stop)
    own_stages = stages is None
    if stages is None:
        stages = StagePool(StagePolicy(min_actors=0, max_actors=1), owner=job_id)
    try:
        return _attempts(
            plan, stages, watch, t0, max_in_flight, retries, progress, pool, resume, on_video, fence
        )
    finally:
        if own_stages:
            stages.shutdown()


def _attempts(
    plan: JobPlan,
    stages: StagePool,
    watch: Watchdog,
    t0: float,
    max_in_flight: int,
    retries: int,
    progress: Progress | None,
    pool: InferPool | None,
    resume: bool,
    on_video: OnVideo | None,
    fence: int | None,
) -> JobOutcome:
    from ray.exceptions import RayActorError, RayTaskError

    from storage import store_state

    job_id, url = plan.spec.job_id, plan.store_url
    pooled = pool is not None and plan.spec.placement != "split"
    gpu = pool.actor_gpus if pool is not None else private_gpus(plan)
    for attempt in range(retries + 1):
        actors: JobActors | None = None
        shared = None
        try:
            watch.progressed()
            state = store_state(url) if resume or attempt > 0 else None
            shared = pool.acquire(plan.infer, job_id) if pooled else None
            actors = build_actors(
                plan,
                attempt=attempt,
                watch=watch,
                gpu=gpu,
                stages=stages,
                shared_infer=shared,
                checkpoint=state.checkpoint if state is not None else None,
                resume=state is not None,
                fence=fence,
            )
            if shared is not None and pool is not None:
                actors = replace(actors, reroute=_rerouter(pool, plan, job_id))
            if on_video is not None:
                on_video(actors.video)
            seen = [actors.watermark]  # commits drive() counted in frames_committed

            def counted(done: int, decoded: int, seen: list[int] = seen) -> None:
                seen[0] = done
                if progress is not None:
                    progress(done, decoded)

            drive(plan, actors, max_in_flight=max_in_flight, progress=counted, watch=watch)
            frames = watch.get(
                actors.writer.finalize.remote(
                    actors.key, {"wall_s": time.perf_counter() - t0, "attempts": attempt + 1}
                ),
                "the store to be finalized",
            )
            if frames > seen[0]:  # the last partial block commits at finalize
                metric("frames_committed").inc(frames - seen[0], tags={"job": job_id})
            return JobOutcome(
                job_id=job_id,
                state="succeeded",
                store_url=url,
                frames=frames,
                seconds={"total": time.perf_counter() - t0},
            )
        except LeaseLostStop:
            # Another owner runs the job now: its store is theirs, not ours to mark.
            return JobOutcome(
                job_id=job_id, state="lost", store_url=url, frames=0, error="lease lost"
            )
        except JobCancelledError:
            mark_store_failed(actors, "cancelled")
            return JobOutcome(
                job_id=job_id, state="cancelled", store_url=url, frames=0, error="cancelled"
            )
        except JobStalledError as e:
            mark_store_failed(actors, str(e))
            return JobOutcome(job_id=job_id, state="failed", store_url=url, frames=0, error=str(e))
        except (RayTaskError, RayActorError) as e:
            cause = e.cause if isinstance(e, RayTaskError) and e.cause else e
            # A stage whose constructor raised (bad checkpoint) did not die by accident:
            # retrying cannot help. Neither can an error a stage raised (unreadable source,
            # existing store): only a process that died is worth another attempt.
            died = isinstance(cause, RayActorError) and not cause.actor_init_failed
            if died:
                _drop_dead(stages, pool, plan, actors, shared)
            if died and attempt < retries:
                logger.warning(
                    "job %s: a stage died (%s); resuming at the watermark", job_id, cause
                )
                continue
            reason = failure_reason(cause, actors)
            mark_store_failed(actors, reason)
            return JobOutcome(job_id=job_id, state="failed", store_url=url, frames=0, error=reason)
        finally:
            if actors is not None:
                actors.release()
            if shared is not None:  # also when setup failed after the member was acquired
                pool.release(plan.infer.model, job_id)
    raise AssertionError("unreachable")


def _rerouter(pool: InferPool, plan: JobPlan, job_id: str) -> Callable[[Any], Any]:
    """The pool's choice of Sapiens member for each batch of ``job_id``."""
    return lambda handle: pool.rebalance(plan.infer.model, job_id, handle)


def _drop_dead(
    stages: StagePool,
    pool: InferPool | None,
    plan: JobPlan,
    actors: JobActors | None,
    shared: Any,
) -> None:
    """After a stage died: drop whichever pooled members are dead (only those: the other jobs
    on a live member go on), so the retry is bound to live ones."""
    if actors is not None:
        stages.drop_dead(actors.pooled_stages())
    if shared is not None and pool is not None:  # the job may have moved between members
        for handle in pool.handles(plan.infer.model):
            if is_dead(handle):
                pool.invalidate(plan.infer.model, handle)
