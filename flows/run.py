"""Running one job on Ray: decode -> persons -> Sapiens -> writer, with bounded in-flight work.

Pixels never pass through the coordinating process: it holds object references and small batch
summaries only. At most ``max_in_flight`` batches are between decode and commit, so memory stays
flat however long the video. If a stage's process dies, the job restarts from its last
checkpoint, saved with the store at or below the commit watermark: decoding restarts at the
checkpoint's source frame and tracking from its saved state (so every track id equals a clean
run's), inference and writing resume at the watermark, and frames already committed are never
written again.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from actors.infer import SapiensWorker
from actors.persons import PersonStage
from actors.session import DecodeSession
from actors.split import BackboneWorker, HeadWorker, PostWorker
from actors.writer import WriterStage
from flows.errors import one_line
from flows.inline import JobOutcome, model_entries
from flows.metrics import metric
from flows.plan import JobPlan
from flows.pool import ACTOR_CONCURRENCY, InferPool, detected_gpus
from flows.raylocal import ensure_ray
from flows.watch import (
    DEFAULT_STALL_S,
    JobCancelledError,
    JobStalledError,
    LeaseLostStop,
    StopCheck,
    Watchdog,
)

__all__ = ["JobCancelledError", "ensure_ray", "run_on_ray", "stage_name"]

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
OnVideo = Callable[[Any], None]
ShouldStop = StopCheck


def stage_name(job_id: str, stage: str, attempt: int) -> str:
    """Prefix of the Ray actor name of a job's stage (lets operators and tests find a job's
    processes); a random suffix keeps a quickly re-run job from meeting its dying actors."""
    return f"sapiens-stream/{job_id}/{stage}/{attempt}/"


def _bundles(plan: JobPlan, gpu: float, pooled: bool) -> dict[str, dict[str, float]]:
    """Resources of each of the job's own actors (the pool's Sapiens actors are not the job's)."""
    out: dict[str, dict[str, float]] = {"decode": {"CPU": 0.5}, "persons": {"CPU": 0.5}}
    if plan.spec.placement == "split":
        out["backbone"] = {"CPU": 0.5, "GPU": 0.5 * gpu}
        for t in plan.spec.tasks:
            out[f"head-{t}"] = {"CPU": 0.25, "GPU": 0.5 * gpu / len(plan.spec.tasks)}
        out["post"] = {"CPU": 0.5}
    elif not pooled:
        out["infer"] = {"CPU": 1.0, "GPU": gpu}
    out["writer"] = {"CPU": 0.25}
    return {k: {r: v for r, v in b.items() if v > 0} for k, b in out.items()}


def _reserve(plan: JobPlan, bundles: dict[str, dict[str, float]], watch: Watchdog) -> Any:
    """One placement group holding every actor of the job, reserved all at once: a job either
    gets all its actors or waits whole, so jobs beyond the cluster's capacity queue instead of
    each holding part of what it needs (which deadlocks them all). Honours the stop check."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(list(bundles.values()), strategy="PACK")
    try:
        _wait_ready(plan, pg.ready(), watch, "cluster resources")
    except JobCancelledError:
        remove_placement_group(pg)
        raise
    return pg


def _wait_ready(plan: JobPlan, ref: Any, watch: Watchdog, what: str) -> None:
    """Wait for ``ref`` however long the cluster needs (an autoscaler may be adding a node):
    waiting for capacity is queueing, not a stall, so only the stop check bounds it."""
    import ray

    waited = 0
    while not ray.wait([ref], timeout=1.0)[0]:
        waited += 1
        watch.check_stop()
        if waited % 30 == 0:
            logger.info("job %s: waiting %d s for %s", plan.spec.job_id, waited, what)
    watch.progressed()


def _actors(
    plan: JobPlan,
    resume: bool,
    attempt: int,
    pool: InferPool | None,
    stages: dict[str, Any],
    watch: Watchdog,
    fence: int | None = None,
) -> dict[str, Any]:
    """Create the job's stage actors into ``stages`` (filled as they are made, so a failure
    part-way still lets ``_release`` clean up)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    gpu = pool.actor_gpus if pool is not None else _private_gpus(plan)
    spec = plan.spec
    pooled = pool is not None and spec.placement != "split"
    facts_ref = None
    if pooled:
        # The shared actor first: were the job's own actors reserved before it, jobs could take
        # every CPU and leave the actor they all wait for pending.
        stages["infer"] = pool.acquire(plan.infer, spec.job_id)
        stages["pooled"] = True
        facts_ref = stages["infer"].model_facts.remote()
        _wait_ready(plan, facts_ref, watch, "its Sapiens actor")
    bundles = _bundles(plan, gpu, pooled=pooled)
    stages["pg"] = pg = _reserve(plan, bundles, watch)
    index = {stage: i for i, stage in enumerate(bundles)}

    nonce = uuid.uuid4().hex[:8]

    def named(stage: str) -> dict[str, Any]:
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=pg, placement_group_bundle_index=index[stage]
        )
        return {
            "name": stage_name(spec.job_id, stage, attempt) + nonce,
            "scheduling_strategy": strategy,
        }

    # A resumed job restarts decoding and tracking at its last checkpoint (saved with the
    # store, at or below the watermark), not at frame 0.
    checkpoint = _checkpoint(plan) if resume else None
    decoder = (
        ray.remote(num_cpus=0.5)(DecodeSession)
        .options(**named("decode"))
        .remote(
            plan.decode,
            spec.job_id,
            spec.source,
            checkpoint["next_source_index"] if checkpoint else 0,
        )
    )
    stages["decode"] = decoder
    info = watch.get(decoder.video_info.remote(), "the video to open")
    from fractions import Fraction

    from actors.messages import VideoInfo  # the decode session's facts, rebuilt here

    video = VideoInfo(
        **{**info, "time_base": None if info["time_base"] is None else Fraction(info["time_base"])}
    )
    persons = (
        ray.remote(num_cpus=0.5)(PersonStage)
        .options(**named("persons"))
        .remote(
            plan.detector,
            plan.detector_options,
            tracker_state=checkpoint["tracker"] if checkpoint else None,
        )
    )
    stages["persons"] = persons
    split: dict[str, Any] = {}
    if spec.placement == "split":
        split = _split_actors(plan, gpu, named)
        stages.update(split)
        infer = split["backbone"]
    elif pool is None:
        infer = (
            ray.remote(num_cpus=1, num_gpus=gpu, max_concurrency=ACTOR_CONCURRENCY)(SapiensWorker)
            .options(**named("infer"))
            .remote(plan.infer)
        )
    else:
        infer = stages["infer"]
    stages["infer"] = infer
    stages["pooled"] = pooled
    facts = watch.get(
        facts_ref if facts_ref is not None else infer.model_facts.remote(), "the Sapiens model"
    )
    writer = (
        ray.remote(num_cpus=0.25)(WriterStage)
        .options(**named("writer"))
        .remote(
            plan.store_url,
            plan.store_spec(video).to_dict(),
            job=plan.job_facts(),
            source={"uri": spec.source, **info},
            models=model_entries(facts),
            resume=resume,
            fence=fence,
        )
    )
    stages["writer"] = writer
    stages["out_size"] = plan.out_size(video)
    stages["video"] = video
    stages["first_index"] = checkpoint["frames"] if checkpoint else 0
    return stages


def _split_actors(
    plan: JobPlan, gpu: int, named: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Backbone, one head actor per task (fractional GPUs) and the post-processing actor."""
    import ray

    backbone = (
        ray.remote(num_cpus=0.5, num_gpus=0.5 * gpu)(BackboneWorker)
        .options(**named("backbone"))
        .remote(plan.infer)
    )
    share = 0.5 * gpu / len(plan.spec.tasks)
    heads = {
        f"head-{t}": ray.remote(num_cpus=0.25, num_gpus=share)(HeadWorker)
        .options(**named(f"head-{t}"))
        .remote(plan.infer, t)
        for t in plan.spec.tasks
    }
    post = ray.remote(num_cpus=0.5)(PostWorker).options(**named("post")).remote(plan.infer)
    return {"backbone": backbone, "post": post, **heads}


def _infer(plan: JobPlan, stages: dict[str, Any], args: tuple[Any, ...]) -> Any:
    """Reference to one batch's frame results: one fused call, or backbone -> heads -> post."""
    if plan.spec.placement != "split":
        return stages["infer"].__call__.remote(*args, job=plan.spec.job_id)
    features = stages["backbone"].__call__.remote(*args)
    outputs = [stages[f"head-{t}"].__call__.remote(features) for t in plan.spec.tasks]
    return stages["post"].__call__.remote(features, *outputs)


def _drive(
    plan: JobPlan,
    stages: dict[str, Any],
    max_in_flight: int,
    progress: Progress | None,
    watch: Watchdog,
) -> int:
    import ray

    writer = stages["writer"]
    watermark = watch.get(writer.watermark.remote(), "the store's watermark")
    index, pending, done_frames = stages["first_index"], [], watermark
    while True:
        watch.check_stop()
        meta_ref, batch_ref = stages["decode"].next.options(num_returns=2).remote()
        meta = watch.get(meta_ref, "the next decoded batch")
        tags = {"job": plan.spec.job_id}
        if meta.frames:
            metric("frames_decoded").inc(meta.frames, tags=tags)
        if meta.n_corrupt:
            metric("frames_corrupt").inc(meta.n_corrupt, tags=tags)
        if meta.frames:
            det_ref, ids_ref = stages["persons"].__call__.options(num_returns=2).remote(batch_ref)
            if index + meta.frames > watermark:
                args = (batch_ref, det_ref, ids_ref, index, stages["out_size"])
                checkpoint = stages["persons"].checkpoint.remote()
                pending.append(writer.add.remote(_infer(plan, stages, args), checkpoint))
            index += meta.frames
        while len(pending) > max_in_flight or (meta.is_last and pending):
            ready, pending = watch.wait(pending, "a batch to be analysed and committed")
            committed = max(done_frames, ray.get(ready[0]))
            if committed > done_frames:
                metric("frames_committed").inc(committed - done_frames, tags=tags)
            done_frames = committed
            if progress:
                progress(done_frames, index)
        if meta.is_last:
            return index


def run_on_ray(
    plan: JobPlan,
    *,
    max_in_flight: int = 3,
    retries: int = 2,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    pool: InferPool | None = None,
    resume: bool = False,
    address: str | None = None,
    on_video: OnVideo | None = None,
    stall_s: float | None = DEFAULT_STALL_S,
    fence: int | None = None,
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

    An error raised by a stage (bad input, bad checkpoint) fails the job at once.
    """
    from ray.exceptions import RayActorError, RayTaskError

    ensure_ray(address)
    t0 = time.perf_counter()
    job_id, url = plan.spec.job_id, plan.store_url
    if resume and (done := _completed_frames(plan)) is not None:
        # A previous owner finished the store but died before recording it: nothing to redo.
        return JobOutcome(job_id=job_id, state="succeeded", store_url=url, frames=done)
    watch = Watchdog(job_id=job_id, stall_s=stall_s, should_stop=should_stop)
    for attempt in range(retries + 1):
        stages: dict[str, Any] = {}
        try:
            watch.progressed()
            _actors(
                plan,
                resume=(resume or attempt > 0) and _store_exists(plan),
                attempt=attempt,
                pool=pool,
                stages=stages,
                watch=watch,
                fence=fence,
            )
            if on_video is not None:
                on_video(stages["video"])
            _drive(plan, stages, max_in_flight, progress, watch)
            frames = watch.get(
                stages["writer"].finalize.remote(
                    {"wall_s": time.perf_counter() - t0, "attempts": attempt + 1}
                ),
                "the store to be finalized",
            )
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
            _fail(stages, "cancelled")
            return JobOutcome(
                job_id=job_id, state="cancelled", store_url=url, frames=0, error="cancelled"
            )
        except JobStalledError as e:
            _fail(stages, str(e))
            return JobOutcome(job_id=job_id, state="failed", store_url=url, frames=0, error=str(e))
        except (RayTaskError, RayActorError) as e:
            cause = e.cause if isinstance(e, RayTaskError) and e.cause else e
            # A stage whose constructor raised (unreadable source, existing store, bad
            # checkpoint) did not die by accident: retrying cannot help.
            died = isinstance(cause, RayActorError) and not cause.actor_init_failed
            if died and stages.get("pooled"):
                pool.invalidate(plan.infer, stages["infer"])
            if died and attempt < retries:
                logger.warning(
                    "job %s: a stage died (%s); resuming at the watermark", job_id, cause
                )
                continue
            reason = _reason(cause, stages)
            _fail(stages, reason)
            return JobOutcome(job_id=job_id, state="failed", store_url=url, frames=0, error=reason)
        finally:
            _release(stages)
            if pool is not None:  # also when setup failed after the member was acquired
                pool.release(plan.infer, job_id)
    raise AssertionError("unreachable")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(cause: BaseException, stages: dict[str, Any]) -> str:
    """One readable line for the job record, without Ray's internals (pids, addresses, ids).

    A stage whose constructor raised (unreadable source, bad checkpoint) reaches us as Ray's
    creation-task traceback, which ends with the original error ("DecodeError: ..."): keep that
    line. A stage whose process died is named, with the likely cause when Ray gives one.
    """
    from ray.exceptions import RayActorError

    text = _ANSI.sub("", str(cause))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if getattr(cause, "actor_init_failed", False):
        line = lines[-1] if lines else type(cause).__name__
    elif isinstance(cause, RayActorError):
        stage = _stage_of(cause, stages)
        why = "it ran out of memory" if "memory" in text.lower() else "it exited unexpectedly"
        line = f"the {stage} process died ({why})"
    else:
        line = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    return one_line(line)


def _stage_of(error: BaseException, stages: dict[str, Any]) -> str:
    """The name of the job's stage whose actor ``error`` is about ("a stage" if unknown)."""
    actor_id = getattr(error, "actor_id", None)
    for name, handle in stages.items():
        own = getattr(handle, "_actor_id", None)
        if actor_id is not None and own is not None and own.hex() == actor_id:
            return "Sapiens" if name == "infer" else f"{name} stage"
    return "a stage"


def _release(stages: dict[str, Any]) -> None:
    import ray

    for name, handle in stages.items():
        if name in ("out_size", "video", "first_index", "pooled", "pg") or (
            name == "infer" and stages.get("pooled")
        ):
            continue
        ray.kill(handle)  # a split job's backbone appears twice; killing twice is harmless
    if "pg" in stages:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(stages["pg"])


def _private_gpus(plan: JobPlan) -> float:
    """GPUs of a job's own Sapiens actor: 1 for an explicit CUDA device, 0 for an explicit CPU,
    else whatever this machine or the cluster has."""
    device = plan.infer.device
    if device is not None:
        return 1.0 if device.startswith("cuda") else 0.0
    return detected_gpus()


def _completed_frames(plan: JobPlan) -> int | None:
    """Frames of the job's store if it is complete, else None."""
    from storage import StoreNotFoundError, open_result

    try:
        reader = open_result(plan.store_url)
    except StoreNotFoundError:
        return None
    return reader.num_frames if reader.status == "complete" else None


def _checkpoint(plan: JobPlan) -> dict[str, Any] | None:
    """The resume state saved with the job's store, if any."""
    from storage import StoreNotFoundError, open_result

    try:
        return open_result(plan.store_url).attrs.get("checkpoint")
    except StoreNotFoundError:
        return None


def _store_exists(plan: JobPlan) -> bool:
    from storage import StoreNotFoundError, open_result

    try:
        open_result(plan.store_url)
    except StoreNotFoundError:
        return False
    return True


def _fail(stages: dict[str, Any], reason: str) -> None:
    import ray

    writer = stages.get("writer")
    if writer is not None:
        try:
            ray.get(writer.fail.remote(reason), timeout=30)
        except Exception:  # the writer may be the stage that died; the caller reports anyway
            logger.exception("could not record the failure in the store")
