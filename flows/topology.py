"""The actors of one job's run on Ray: what they are, how they are made, how they go.

A job runs on its own decode, person (detect + track) and writer actors, and on a Sapiens actor
that is either shared (a service's pool) or its own; split placement adds a backbone, one head
actor per task and a post-processing actor. All of a job's own actors are reserved at once in
one placement group, so a job either gets everything it needs or waits whole: jobs beyond the
cluster's capacity queue instead of each holding part of what it needs (which deadlocks them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.infer import SapiensWorker
from actors.messages import VideoInfo
from actors.persons import PersonStage
from actors.session import DecodeSession
from actors.split import BackboneWorker, HeadWorker, PostWorker
from actors.writer import WriterStage
from flows.inline import model_entries
from flows.plan import JobPlan
from flows.pool import ACTOR_CONCURRENCY, detected_gpus
from flows.watch import Watchdog
from storage import ResumeState

__all__ = ["JobActors", "build_actors", "stage_name"]

logger = logging.getLogger(__name__)


def stage_name(job_id: str, stage: str, attempt: int) -> str:
    """Prefix of the Ray actor name of a job's stage (lets operators and tests find a job's
    processes); a random suffix keeps a quickly re-run job from meeting its dying actors."""
    return f"sapiens-stream/{job_id}/{stage}/{attempt}/"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobActors:
    """One attempt's actors of a job, and what the drive loop needs to know of the video.

    Attributes:
        decode, persons, writer: the job's own stage actors.
        infer: the fused Sapiens actor, or the split backbone.
        heads: split placement: task -> head actor (empty when fused).
        post: split placement's post-processing actor (None when fused).
        pooled: ``infer`` belongs to a service's pool (never killed with the job).
        pg: the placement group holding the job's own actors.
        video: the source's facts.
        out_size: (height, width) of the dense outputs.
        first_index: the first frame index this attempt produces (its checkpoint's frames).
    """

    decode: Any
    persons: Any
    writer: Any
    infer: Any
    heads: Mapping[str, Any] = field(default_factory=dict)
    post: Any | None = None
    pooled: bool = False
    pg: Any = None
    video: VideoInfo
    out_size: tuple[int, int]
    first_index: int = 0

    def stage_of(self, actor_id: str | None) -> str:
        """The name of the stage whose actor has ``actor_id`` ("a stage" if none)."""
        named = {"decode": self.decode, "persons": self.persons, "writer": self.writer}
        named.update({"Sapiens": self.infer, "post": self.post})
        named.update({f"head-{t}": h for t, h in self.heads.items()})
        for name, handle in named.items():
            own = getattr(handle, "_actor_id", None)
            if actor_id is not None and own is not None and own.hex() == actor_id:
                return name if name == "Sapiens" else f"{name} stage"
        return "a stage"

    def release(self) -> None:
        """Kill the job's own actors and free its placement group (a pooled actor stays)."""
        own = [self.decode, self.persons, self.writer, *self.heads.values(), self.post]
        if not self.pooled:
            own.append(self.infer)
        _kill([h for h in own if h is not None], self.pg)


def _kill(handles: list[Any], pg: Any) -> None:
    import ray

    for handle in handles:
        ray.kill(handle)  # killing an actor twice is harmless
    if pg is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)


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


def wait_ready(plan: JobPlan, ref: Any, watch: Watchdog, what: str) -> None:
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


def _reserve(plan: JobPlan, bundles: dict[str, dict[str, float]], watch: Watchdog) -> Any:
    """One placement group holding every actor of the job, reserved all at once."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(list(bundles.values()), strategy="PACK")
    try:
        wait_ready(plan, pg.ready(), watch, "cluster resources")
    except BaseException:
        remove_placement_group(pg)
        raise
    return pg


def private_gpus(plan: JobPlan) -> float:
    """GPUs of a job's own Sapiens actor: 1 for an explicit CUDA device, 0 for an explicit CPU,
    else whatever this machine or the cluster has."""
    device = plan.infer.device
    if device is not None:
        return 1.0 if device.startswith("cuda") else 0.0
    return detected_gpus()


def build_actors(
    plan: JobPlan,
    *,
    attempt: int,
    watch: Watchdog,
    gpu: float,
    shared_infer: Any = None,
    checkpoint: ResumeState | None = None,
    resume: bool = False,
    fence: int | None = None,
) -> JobActors:
    """Make one attempt's actors; on any failure part-way, kill what was made and re-raise.

    Args:
        plan: the job.
        attempt: the attempt number (in the actors' names).
        watch: bounds every wait (stall timeout, stop check).
        gpu: GPUs of the job's own Sapiens actor or split actors.
        shared_infer: the pooled Sapiens actor to use (None: the job makes its own).
        checkpoint: the resume state saved with the store: decoding restarts at its source
            frame and tracking from its saved state, not at frame 0.
        resume: continue the existing store instead of creating it.
        fence: the claim's fencing token, recorded with the store.
    """
    made: dict[str, Any] = {}
    try:
        return _build(plan, attempt, watch, gpu, shared_infer, checkpoint, resume, fence, made)
    except BaseException:
        _kill([h for k, h in made.items() if k != "pg"], made.get("pg"))
        raise


def _build(
    plan: JobPlan,
    attempt: int,
    watch: Watchdog,
    gpu: float,
    shared_infer: Any,
    checkpoint: ResumeState | None,
    resume: bool,
    fence: int | None,
    made: dict[str, Any],
) -> JobActors:
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    spec = plan.spec
    facts_ref = None
    if shared_infer is not None:
        # The shared actor first: were the job's own actors reserved before it, jobs could take
        # every CPU and leave the actor they all wait for pending.
        facts_ref = shared_infer.model_facts.remote()
        wait_ready(plan, facts_ref, watch, "its Sapiens actor")
    bundles = _bundles(plan, gpu, pooled=shared_infer is not None)
    made["pg"] = pg = _reserve(plan, bundles, watch)
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

    made["decode"] = decoder = (
        ray.remote(num_cpus=0.5)(DecodeSession)
        .options(**named("decode"))
        .remote(
            plan.decode,
            spec.job_id,
            spec.source,
            checkpoint.next_source_index if checkpoint else 0,
        )
    )
    video: VideoInfo = watch.get(decoder.video_info.remote(), "the video to open")
    made["persons"] = persons = (
        ray.remote(num_cpus=0.5)(PersonStage)
        .options(**named("persons"))
        .remote(
            plan.detector,
            plan.detector_options,
            tracker_state=dict(checkpoint.tracker) if checkpoint else None,
        )
    )
    heads: dict[str, Any] = {}
    post = None
    if spec.placement == "split":
        made.update(_split_actors(plan, gpu, named))
        infer, post = made["backbone"], made["post"]
        heads = {t: made[f"head-{t}"] for t in spec.tasks}
    elif shared_infer is None:
        made["infer"] = infer = (
            ray.remote(num_cpus=1, num_gpus=gpu, max_concurrency=ACTOR_CONCURRENCY)(SapiensWorker)
            .options(**named("infer"))
            .remote(plan.infer)
        )
    else:
        infer = shared_infer
    facts = watch.get(
        facts_ref if facts_ref is not None else infer.model_facts.remote(), "the Sapiens model"
    )
    made["writer"] = writer = (
        ray.remote(num_cpus=0.25)(WriterStage)
        .options(**named("writer"))
        .remote(
            plan.store_url,
            plan.store_spec(video),
            job=plan.job_facts(),
            source={"uri": spec.source, **video.to_dict()},
            models=model_entries(facts),
            resume=resume,
            fence=fence,
        )
    )
    return JobActors(
        decode=decoder,
        persons=persons,
        writer=writer,
        infer=infer,
        heads=heads,
        post=post,
        pooled=shared_infer is not None,
        pg=pg,
        video=video,
        out_size=plan.out_size(video),
        first_index=checkpoint.frames if checkpoint else 0,
    )


def _split_actors(
    plan: JobPlan, gpu: float, named: Callable[[str], dict[str, Any]]
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
