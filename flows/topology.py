"""The actors of one job attempt on Ray: which it uses, how it gets them, how it lets them go.

A job is bound to pooled decode, person (detect + track) and writer members
(:mod:`flows.stagepool`) and to a Sapiens actor that is either shared (a service's pool) or its
own; split placement adds a backbone, one head actor per task and a post-processing actor. The
job's own actors (if any) are reserved at once in one placement group, so a job either gets
everything it needs or waits whole: jobs beyond the cluster's capacity queue instead of each
holding part of what it needs (which deadlocks them).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.infer import SapiensWorker
from actors.messages import VideoInfo
from actors.persons import PersonRequest
from actors.session import DecodeRequest
from actors.split import BackboneWorker, HeadWorker, PostWorker
from flows.inline import model_entries
from flows.plan import JobPlan
from flows.pool import ACTOR_CONCURRENCY, detected_gpus
from flows.stagepool import STAGE_KINDS, StagePool, stage_name
from flows.watch import Watchdog
from storage import ResumeState

__all__ = ["JobActors", "build_actors", "stage_name"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobActors:
    """One attempt's actors of a job, and what the drive loop needs to start it.

    Attributes:
        key: the attempt's session key on the pooled members (unique per attempt).
        decode, persons, writer: the pooled stage members the job is bound to.
        infer: the fused Sapiens actor, or the split backbone.
        heads: split placement: task -> head actor (empty when fused).
        post: split placement's post-processing actor (None when fused).
        pooled: ``infer`` belongs to a service's pool (never killed with the job).
        pg: the placement group holding the job's own GPU actors (None: it has none).
        stages: the pool ``decode``, ``persons`` and ``writer`` belong to.
        video: the source's facts.
        out_size: (height, width) of the dense outputs.
        decode_from: the first decode request (at the checkpoint's source frame).
        person_request: the job's detector and tracker settings.
        resume: the resume state tracking continues from (None: a fresh tracker).
        watermark: the store's watermark when the attempt opened it.
        first_index: the first frame index this attempt produces (its checkpoint's frames).
        reroute: given the Sapiens member a batch would go to, the one it goes to (a pool's
            rebalancing); None: always ``infer``.
    """

    key: str
    job_id: str
    decode: Any
    persons: Any
    writer: Any
    infer: Any
    heads: Mapping[str, Any] = field(default_factory=dict)
    post: Any | None = None
    pooled: bool = False
    pg: Any = None
    stages: StagePool
    video: VideoInfo
    out_size: tuple[int, int]
    decode_from: DecodeRequest
    person_request: PersonRequest
    resume: ResumeState | None = None
    watermark: int = 0
    first_index: int = 0
    reroute: Callable[[Any], Any] | None = None

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

    def pooled_stages(self) -> list[Any]:
        """The pooled members this attempt used."""
        return [self.decode, self.persons, self.writer]

    def release(self) -> None:
        """End the attempt's sessions on the pooled members, unbind the job from them, and kill
        the job's own actors (a pooled actor stays)."""
        _release_sessions(self.stages, self.job_id, self.key, self.decode, self.writer)
        own = [*self.heads.values(), self.post]
        if not self.pooled:
            own.append(self.infer)
        _kill([h for h in own if h is not None], self.pg)


def _release_sessions(stages: StagePool, job_id: str, key: str, decode: Any, writer: Any) -> None:
    """Close the attempt's reader and store on their members (without waiting: a dead member
    has nothing to close) and unbind the job."""
    for handle in (decode, writer):
        if handle is not None:
            handle.close.remote(key)
    for kind in STAGE_KINDS:
        stages.release(kind, job_id)


def _kill(handles: list[Any], pg: Any) -> None:
    import ray

    for handle in handles:
        ray.kill(handle)  # killing an actor twice is harmless
    if pg is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)


def _bundles(plan: JobPlan, gpu: float, pooled: bool) -> dict[str, dict[str, float]]:
    """Resources of each of the job's own actors: a private Sapiens actor, or the split
    placement's backbone, heads and post-processing (the pooled stages are not the job's)."""
    out: dict[str, dict[str, float]] = {}
    if plan.spec.placement == "split":
        out["backbone"] = {"CPU": 0.5, "GPU": 0.5 * gpu}
        for t in plan.spec.tasks:
            out[f"head-{t}"] = {"CPU": 0.25, "GPU": 0.5 * gpu / len(plan.spec.tasks)}
        out["post"] = {"CPU": 0.5}
    elif not pooled:
        out["infer"] = {"CPU": 1.0, "GPU": gpu}
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
    stages: StagePool,
    shared_infer: Any = None,
    checkpoint: ResumeState | None = None,
    resume: bool = False,
    fence: int | None = None,
) -> JobActors:
    """Bind one attempt to pooled stage members and make its own actors; on any failure
    part-way, undo what was done and re-raise.

    Args:
        plan: the job.
        attempt: the attempt number (in the own actors' names and the session key).
        watch: bounds every wait (stall timeout, stop check).
        gpu: GPUs of the job's own Sapiens actor or split actors.
        stages: the decode, person and writer pool.
        shared_infer: the pooled Sapiens actor to use (None: the job makes its own).
        checkpoint: the resume state saved with the store: decoding restarts at its source
            frame and tracking from its saved state, not at frame 0.
        resume: continue the existing store instead of creating it.
        fence: the claim's fencing token, recorded with the store.
    """
    spec = plan.spec
    key = f"{spec.job_id}/{attempt}/{uuid.uuid4().hex[:8]}"
    made: dict[str, Any] = {}
    try:
        return _build(
            plan, key, attempt, watch, gpu, stages, shared_infer, checkpoint, resume, fence, made
        )
    except BaseException:
        _release_sessions(stages, spec.job_id, key, made.get("decode"), made.get("writer"))
        own = [h for k, h in made.items() if k not in ("pg", "decode", "persons", "writer")]
        _kill(own, made.get("pg"))
        raise


def _build(
    plan: JobPlan,
    key: str,
    attempt: int,
    watch: Watchdog,
    gpu: float,
    stages: StagePool,
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
        facts_ref = shared_infer.model_facts.remote()
        wait_ready(plan, facts_ref, watch, "its Sapiens actor")
    for kind in STAGE_KINDS:
        made[kind] = stages.acquire(kind, spec.job_id)
    request = DecodeRequest(
        job_id=spec.job_id,
        source=spec.source,
        spec=plan.decode,
        start_index=checkpoint.next_source_index if checkpoint else 0,
    )
    video_ref = made["decode"].probe.remote(key, request)
    wait_ready(plan, video_ref, watch, "its decode actor")
    video: VideoInfo = watch.get(video_ref, "the video to open")
    bundles = _bundles(plan, gpu, pooled=shared_infer is not None)
    pg = None
    if bundles:
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
    opened = made["writer"].open.remote(
        key,
        plan.store_url,
        plan.store_spec(video),
        job=plan.job_facts(),
        source={"uri": spec.source, **video.to_dict()},
        models=model_entries(facts),
        resume=resume,
        fence=fence,
    )
    watermark = watch.get(opened, "the store to open")
    return JobActors(
        key=key,
        job_id=spec.job_id,
        decode=made["decode"],
        persons=made["persons"],
        writer=made["writer"],
        infer=infer,
        heads=heads,
        post=post,
        pooled=shared_infer is not None,
        pg=pg,
        stages=stages,
        video=video,
        out_size=plan.out_size(video),
        decode_from=request,
        person_request=PersonRequest(
            detector=plan.detector, options=dict(plan.detector_options or {})
        ),
        resume=checkpoint,
        watermark=watermark,
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
