"""The actors of one job attempt on Ray: which it uses, how it gets them, how it lets them go.

A job is bound to pooled decode, person (detect + track) and writer members
(:mod:`flows.stagepool`) and to a Sapiens actor that is either shared (a service's pool) or its
own; split placement adds a backbone, one head actor per task and a post-processing actor
(the job's own actors, made by :mod:`flows.ownactors`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.messages import VideoInfo
from actors.persons import PersonRequest
from actors.session import DecodeRequest
from flows.inline import model_entries
from flows.ownactors import kill, own_actors, wait_ready
from flows.plan import JobPlan
from flows.stagepool import STAGE_KINDS, StagePool
from flows.watch import Watchdog
from storage import ResumeState

__all__ = ["JobActors", "build_actors"]


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
        kill([h for h in own if h is not None], self.pg)


def _release_sessions(stages: StagePool, job_id: str, key: str, decode: Any, writer: Any) -> None:
    """Close the attempt's reader and store on their members (without waiting: a dead member
    has nothing to close) and unbind the job."""
    for handle in (decode, writer):
        if handle is not None:
            handle.close.remote(key)
    for kind in STAGE_KINDS:
        stages.release(kind, job_id)


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
        kill(own, made.get("pg"))
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
    spec = plan.spec
    facts_ref = None
    if shared_infer is not None:
        facts_ref = shared_infer.model_facts.remote(plan.infer.tasks)
        wait_ready(plan, facts_ref, watch, "its Sapiens actor")
    for kind in STAGE_KINDS:
        made[kind] = stages.acquire(kind, spec.job_id)
    person_request = PersonRequest(
        detector=plan.detector,
        options=dict(plan.detector_options or {}),
        max_persons=plan.max_persons,
    )
    # The detector is built before any frame is decoded: missing weights fail the job here.
    watch.get(made["persons"].prepare.remote(person_request), "the person detector")
    request = DecodeRequest(
        job_id=spec.job_id,
        source=spec.source,
        spec=plan.decode,
        start_index=checkpoint.next_source_index if checkpoint else 0,
    )
    video_ref = made["decode"].probe.remote(key, request)
    wait_ready(plan, video_ref, watch, "its decode actor")
    video: VideoInfo = watch.get(video_ref, "the video to open")
    infer, heads, post = own_actors(plan, attempt, watch, gpu, shared_infer, made)
    facts = watch.get(
        facts_ref if facts_ref is not None else infer.model_facts.remote(plan.infer.tasks),
        "the Sapiens model",
    )
    store = plan.store_request(
        video, model_entries(facts), resume=resume, fence=fence, trunk=facts.get("trunk")
    )
    opened = made["writer"].open.remote(key, store)
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
        pg=made.get("pg"),
        stages=stages,
        video=video,
        out_size=plan.out_size(video),
        decode_from=request,
        person_request=person_request,
        resume=checkpoint,
        watermark=watermark,
        first_index=checkpoint.frames if checkpoint else 0,
    )
