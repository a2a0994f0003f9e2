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
import os
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
from flows.inline import JobOutcome, model_entries
from flows.metrics import metric
from flows.plan import JobPlan
from flows.pool import ACTOR_CONCURRENCY, InferPool, detected_gpus

__all__ = ["JobCancelledError", "ensure_ray", "run_on_ray", "stage_name"]

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
OnVideo = Callable[[Any], None]
ShouldStop = Callable[[], bool]


class JobCancelledError(Exception):
    """Raised inside the coordinating loop when the job was asked to stop."""


def ensure_ray(address: str | None = None) -> None:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local cluster sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    ray.init(
        address="local",  # a new local cluster, even if another runs on this machine
        num_cpus=max(4, os.cpu_count() or 1),
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        log_to_driver=False,
    )


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


def _reserve(
    plan: JobPlan, bundles: dict[str, dict[str, float]], should_stop: ShouldStop | None
) -> Any:
    """One placement group holding every actor of the job, reserved all at once: a job either
    gets all its actors or waits whole, so jobs beyond the cluster's capacity queue instead of
    each holding part of what it needs (which deadlocks them all). Polls ``should_stop``."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(list(bundles.values()), strategy="PACK")
    try:
        _wait_ready(plan, pg.ready(), should_stop, "cluster resources")
    except JobCancelledError:
        remove_placement_group(pg)
        raise
    return pg


def _wait_ready(plan: JobPlan, ref: Any, should_stop: ShouldStop | None, what: str) -> None:
    """Wait for ``ref`` however long the cluster needs (an autoscaler may be adding a node),
    polling ``should_stop`` every second."""
    import ray

    waited = 0
    while not ray.wait([ref], timeout=1.0)[0]:
        waited += 1
        if should_stop is not None and should_stop():
            raise JobCancelledError(plan.spec.job_id)
        if waited % 30 == 0:
            logger.info("job %s: waiting %d s for %s", plan.spec.job_id, waited, what)


def _actors(
    plan: JobPlan,
    resume: bool,
    attempt: int,
    pool: InferPool | None,
    stages: dict[str, Any],
    should_stop: ShouldStop | None = None,
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
        _wait_ready(plan, facts_ref, should_stop, "its Sapiens actor")
    bundles = _bundles(plan, gpu, pooled=pooled)
    stages["pg"] = pg = _reserve(plan, bundles, should_stop)
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
    info = ray.get(decoder.video_info.remote())
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
    facts = ray.get(facts_ref if facts_ref is not None else infer.model_facts.remote())
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
    should_stop: ShouldStop | None,
) -> int:
    import ray

    writer = stages["writer"]
    watermark = ray.get(writer.watermark.remote())
    index, pending, done_frames = stages["first_index"], [], watermark
    while True:
        if should_stop is not None and should_stop():
            raise JobCancelledError(plan.spec.job_id)
        meta_ref, batch_ref = stages["decode"].next.options(num_returns=2).remote()
        meta = ray.get(meta_ref)
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
            ready, pending = ray.wait(pending, num_returns=1)
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
) -> JobOutcome:
    """Run ``plan``'s job to completion on Ray (local or ``address``).

    Args:
        plan: the job.
        max_in_flight: batches between decode and commit.
        retries: times a dead stage process is survived (the job resumes at its watermark).
        progress: called with (committed frames, decoded frames) as commits land.
        should_stop: polled once per batch; True cancels the job.
        pool: shared Sapiens actors (a service's); default: one private actor for this job.
        resume: continue an existing store of this job (after its previous owner died).
        address: Ray cluster to join.
        on_video: called with the source's ``VideoInfo`` once it is probed.

    An error raised by a stage (bad input, bad checkpoint) fails the job at once.
    """
    from ray.exceptions import RayActorError, RayTaskError

    ensure_ray(address)
    t0 = time.perf_counter()
    job_id, url = plan.spec.job_id, plan.store_url
    if resume and (done := _completed_frames(plan)) is not None:
        # A previous owner finished the store but died before recording it: nothing to redo.
        return JobOutcome(job_id=job_id, state="succeeded", store_url=url, frames=done)
    for attempt in range(retries + 1):
        stages: dict[str, Any] = {}
        try:
            _actors(
                plan,
                resume=(resume or attempt > 0) and _store_exists(plan),
                attempt=attempt,
                pool=pool,
                stages=stages,
                should_stop=should_stop,
            )
            if on_video is not None:
                on_video(stages["video"])
            _drive(plan, stages, max_in_flight, progress, should_stop)
            frames = _get(
                stages["writer"].finalize.remote(
                    {"wall_s": time.perf_counter() - t0, "attempts": attempt + 1}
                )
            )
            return JobOutcome(
                job_id=job_id,
                state="succeeded",
                store_url=url,
                frames=frames,
                seconds={"total": time.perf_counter() - t0},
            )
        except JobCancelledError:
            _fail(stages, "cancelled")
            return JobOutcome(
                job_id=job_id, state="cancelled", store_url=url, frames=0, error="cancelled"
            )
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
            reason = _reason(cause)
            _fail(stages, reason)
            return JobOutcome(job_id=job_id, state="failed", store_url=url, frames=0, error=reason)
        finally:
            _release(stages)
            if pool is not None:  # also when setup failed after the member was acquired
                pool.release(plan.infer, job_id)
    raise AssertionError("unreachable")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(cause: BaseException) -> str:
    """One readable line for the job record. A stage whose constructor raised (unreadable
    source, bad checkpoint) reaches us as Ray's creation-task traceback, which ends with the
    original error ("DecodeError: ..."): keep that line."""
    text = _ANSI.sub("", str(cause))
    if getattr(cause, "actor_init_failed", False):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else type(cause).__name__
    return f"{type(cause).__name__}: {text}"


def _get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


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
