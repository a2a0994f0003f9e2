"""Long-lived decode, person and writer actors shared by every job of a service.

A job does not start processes: it is bound to one member of each stage pool (the member with
the fewest jobs) and its per-job state travels as data. The decoder's position is the cursor of
each ``next`` call (a member keeps the open reader as a cache and reopens at the cursor when
the job comes to it without one); the tracker's state goes in and out of every person call; the
writer's commit state is the store (a member keeps the open store as a cache, per attempt).

Sizing: a kind grows when every member already serves ``jobs_per_actor`` jobs (up to
``max_actors``), and a member idle longer than ``idle_s`` goes when the kind is above
``min_actors``. A member that died is dropped (``invalidate``); the jobs that had work there
retry from their committed state and are bound to a live member, and no other job notices.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from actors.persons import PersonWorker
from actors.session import DecodePoolWorker
from actors.writer import WriterWorker
from flows.scaling import detector_gpus

__all__ = ["STAGE_KINDS", "StageKind", "StagePolicy", "StagePool", "is_dead", "stage_name"]

logger = logging.getLogger(__name__)

StageKind = Literal["decode", "persons", "writer"]
STAGE_KINDS: tuple[StageKind, ...] = get_args(StageKind)


def stage_name(owner: str, stage: str, generation: int) -> str:
    """Prefix of a stage actor's Ray name: its owner (``pool`` for a service, else the job),
    the stage and how many members of that stage the owner made before it. A random suffix
    keeps a quickly re-run job from meeting its dying actors."""
    return f"sapiens-stream/{owner}/{stage}/{generation}/"


def is_dead(handle: Any, timeout_s: float = 10.0) -> bool:
    """True when the actor ``handle`` does not answer a ping (it died, or hangs)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        ray.get(handle.__ray_ready__.remote(), timeout=timeout_s)
    except (RayActorError, GetTimeoutError):
        return True
    return False


@dataclass(frozen=True, slots=True)
class _KindSpec:
    cls: type
    num_cpus: float
    concurrency: int


# Ray resources and concurrent calls per member. Decoding and writing release the GIL in native
# code (FFmpeg, compression, file I/O), so one member overlaps several jobs' calls.
_KINDS: dict[StageKind, _KindSpec] = {
    "decode": _KindSpec(DecodePoolWorker, 0.5, 8),
    "persons": _KindSpec(PersonWorker, 0.5, 4),
    "writer": _KindSpec(WriterWorker, 0.25, 8),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StagePolicy:
    """How many members each stage kind has.

    Args:
        min_actors: members of each kind kept even with no job (made by :meth:`StagePool.warm`).
        max_actors: most members of each kind.
        jobs_per_actor: a new member is made when every member serves this many jobs.
        idle_s: a member with no job for this long may go (above ``min_actors``).
        detector_gpus: the share of a GPU each person-stage member asks Ray for (0: none), so
            that detectors with weights run batched on a GPU (``detection.device`` ``auto``);
            None: ``flows.scaling.detector_gpus()`` when the member is made (a tenth of a GPU
            when the machine or the cluster has GPUs).
    """

    min_actors: int = 1
    max_actors: int = 4
    jobs_per_actor: int = 8
    idle_s: float = 120.0
    detector_gpus: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_actors <= self.max_actors or self.max_actors < 1:
            msg = (
                "need 0 <= min_actors <= max_actors and max_actors >= 1, got "
                f"{self.min_actors}..{self.max_actors}"
            )
            raise ValueError(msg)
        if self.detector_gpus is not None and not 0 <= self.detector_gpus <= 1:
            raise ValueError(f"need 0 <= detector_gpus <= 1, got {self.detector_gpus}")
        if self.jobs_per_actor < 1 or self.idle_s <= 0:
            msg = f"need jobs_per_actor >= 1 and idle_s > 0, got {self}"
            raise ValueError(msg)


@dataclass(slots=True, eq=False)
class _Member:
    handle: Any
    name: str
    ready_ref: Any
    jobs: set[str] = field(default_factory=set)
    idle_since: float = field(default_factory=time.monotonic)


class StagePool:
    """Decode, person and writer actors shared by the jobs of one owner.

    Args:
        policy: sizes per kind.
        owner: in the members' names: ``pool`` for a service, a job id for a job's own pool.
    """

    def __init__(self, policy: StagePolicy | None = None, *, owner: str = "pool") -> None:
        self.policy = policy or StagePolicy()
        self.owner = owner
        self._members: dict[StageKind, list[_Member]] = {k: [] for k in STAGE_KINDS}
        self._made: dict[StageKind, int] = dict.fromkeys(STAGE_KINDS, 0)
        self._lock = threading.Lock()

    @property
    def created(self) -> dict[StageKind, int]:
        """Members made so far, per kind (replacements included)."""
        with self._lock:
            return dict(self._made)

    def sizes(self) -> dict[StageKind, int]:
        with self._lock:
            return {k: len(m) for k, m in self._members.items()}

    def warm(self) -> None:
        """Start ``min_actors`` members of each kind (without waiting for them), so jobs that
        come later start without starting a process."""
        with self._lock:
            for kind in STAGE_KINDS:
                while len(self._members[kind]) < self.policy.min_actors:
                    self._members[kind].append(self._create(kind))

    def wait_warm(self, timeout_s: float = 120.0) -> None:
        """Wait until every member made so far is constructed."""
        import ray

        with self._lock:
            refs = [m.ready_ref for ms in self._members.values() for m in ms]
        if refs:
            ray.get(refs, timeout=timeout_s)

    def acquire(self, kind: StageKind, job_id: str) -> Any:
        """The member of ``kind`` that ``job_id`` uses: the one with the fewest jobs, or a new
        one when every member is full and the kind may grow."""
        with self._lock:
            members = self._members[kind]
            member = min(members, key=lambda m: len(m.jobs), default=None)
            full = member is None or len(member.jobs) >= self.policy.jobs_per_actor
            if full and len(members) < self.policy.max_actors:
                member = self._create(kind)
                members.append(member)
            assert member is not None
            member.jobs.add(job_id)
            return member.handle

    def release(self, kind: StageKind, job_id: str) -> None:
        """``job_id`` no longer uses its member of ``kind``."""
        with self._lock:
            for member in self._members[kind]:
                if job_id in member.jobs:
                    member.jobs.discard(job_id)
                    if not member.jobs:
                        member.idle_since = time.monotonic()

    def invalidate(self, handle: Any) -> bool:
        """Drop ``handle`` (it died, or it may have); True when it was a member."""
        import ray

        with self._lock:
            for kind, members in self._members.items():
                kept = [m for m in members if m.handle is not handle]
                if len(kept) != len(members):
                    self._members[kind] = kept
                    ray.kill(handle)
                    return True
        return False

    def drop_dead(self, handles: list[Any]) -> int:
        """Drop those of ``handles`` that died; returns how many. Called after a job lost a
        stage, to find which member it was (the others keep serving their jobs)."""
        return sum(self.invalidate(h) for h in handles if is_dead(h))

    def scale(self) -> int:
        """Remove members idle longer than ``idle_s`` while a kind is above ``min_actors``;
        returns how many went."""
        import ray

        removed = 0
        now = time.monotonic()
        with self._lock:
            for members in self._members.values():
                idle = sorted(
                    (m for m in members if not m.jobs and now - m.idle_since >= self.policy.idle_s),
                    key=lambda m: m.idle_since,
                )
                for member in idle[: max(0, len(members) - self.policy.min_actors)]:
                    members.remove(member)
                    ray.kill(member.handle)
                    removed += 1
        return removed

    def shutdown(self) -> None:
        """Kill every member."""
        import ray

        with self._lock:
            for members in self._members.values():
                for member in members:
                    ray.kill(member.handle)
                members.clear()

    def _create(self, kind: StageKind) -> _Member:
        import ray

        spec = _KINDS[kind]
        name = stage_name(self.owner, kind, self._made[kind]) + uuid.uuid4().hex[:8]
        self._made[kind] += 1
        gpus = 0.0
        if kind == "persons":
            share = self.policy.detector_gpus
            gpus = detector_gpus() if share is None else share
        handle = (
            ray.remote(num_cpus=spec.num_cpus, num_gpus=gpus, max_concurrency=spec.concurrency)(
                spec.cls
            )
            .options(name=name)
            .remote()
        )
        logger.info("stage pool: started %s", name)
        return _Member(handle=handle, name=name, ready_ref=handle.__ray_ready__.remote())
