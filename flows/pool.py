"""The shared Sapiens actors of a service, sized from the backlog.

``InferPool`` keeps, per model (``ModelSpec``: weights, precision, input size), a set of Sapiens
actors that every running job of that model shares, whatever its tasks or dense mode (those
travel with each call): a job is bound to the member with the fewest jobs, moves to another
member when that one has at least two jobs fewer (``rebalance``, asked before every batch), and
the crops of all jobs bound to one member meet in that member's dynamic batcher.

How many members a model should have is decided in ``flows.scaling`` (re-exported here).
``InferPool.scale`` applies a decision: new members are created at once (a member
that asks for a GPU no node has stays pending, which is what makes the Ray autoscaler add a GPU
node; ``request_resources`` tells it ahead of the actors), and members idle longer than
``idle_s`` are killed when the pool is above its target (their node then idles and is removed).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from actors.infer import InferSpec, ModelSpec, SapiensWorker
from flows.scaling import (
    ScalePolicy,
    desired_actors,
    detected_gpu_memory_gib,
    detected_gpus,
    gpu_share,
    move_to,
    serve_defaults,
)

__all__ = [
    "ACTOR_CONCURRENCY",
    "InferPool",
    "ScalePolicy",
    "desired_actors",
    "detected_gpus",
    "gpu_share",
    "move_to",
    "serve_defaults",
]

logger = logging.getLogger(__name__)

# Calls in flight on one shared actor: several jobs' batches overlap (cropping and decoding of
# one beside the forward of another) and meet in its batcher.
ACTOR_CONCURRENCY = 8


@dataclass(slots=True, eq=False)
class _Member:
    handle: Any
    name: str
    ready_ref: Any
    jobs: set[str] = field(default_factory=set)
    idle_since: float = field(default_factory=time.monotonic)
    ready: bool = False
    last_stats: dict[str, Any] | None = None
    fps: float | None = None


class InferPool:
    """Sapiens actors shared by every job that runs the same model.

    Args:
        policy: sizes and resources of the members (default: one CPU/GPU member, as detected).
        concurrency: calls a member runs at once (their crops meet in its batcher).

    A dead member is dropped (``invalidate``) and replaced when a job next needs one.
    """

    def __init__(
        self, policy: ScalePolicy | None = None, *, concurrency: int = ACTOR_CONCURRENCY
    ) -> None:
        self.policy = policy or ScalePolicy()
        self.concurrency = concurrency  # 1: calls run one by one (no cross-call batching)
        self._gpus = self.policy.actor_gpus
        self._gpu_gib: float | None = None
        self._members: dict[ModelSpec, list[_Member]] = {}
        self._batch: dict[ModelSpec, tuple[int, float]] = {}  # forward batch, deadline (ms)
        self._lock = threading.Lock()
        self.created = 0
        self.removed = 0
        self._requested: list[dict[str, float]] | None = None

    # -- jobs ------------------------------------------------------------------------------------
    def acquire(self, spec: InferSpec, job_id: str) -> Any:
        """The member ``job_id`` (running ``spec``) uses: of ``spec.model``'s members, the one
        with the fewest jobs (a new one if none)."""
        key = self.register(spec)
        with self._lock:
            members = self._members.setdefault(key, [])
            self._poll_ready(members)
            if not members:
                members.append(self._create(key))
            member = min(members, key=lambda m: (len(m.jobs), not m.ready))
            member.jobs.add(job_id)
            return member.handle

    def register(self, spec: InferSpec) -> ModelSpec:
        """``spec``'s model key; the first job of a model sets its members' forward batch (when
        the policy does not)."""
        with self._lock:
            self._batch.setdefault(
                spec.model, (self.policy.batch_size or spec.batch_size, spec.batch_deadline_ms)
            )
        return spec.model

    def release(self, key: ModelSpec, job_id: str) -> None:
        """``job_id`` no longer uses its member."""
        with self._lock:
            for member in self._members.get(key, []):
                if job_id in member.jobs:
                    member.jobs.discard(job_id)
                    if not member.jobs:
                        member.idle_since = time.monotonic()

    def rebalance(self, key: ModelSpec, job_id: str, handle: Any) -> Any:
        """The member ``job_id`` sends its next batch to: ``handle``, its member now, unless a
        ready member of the same model has at least two jobs fewer (one added by the autoscaler
        after the job started, say); then the job moves there. Calls are stateless, so a job may
        change members between any two batches."""
        with self._lock:
            members = self._members.get(key, [])
            self._poll_ready(members)
            mine = next((m for m in members if m.handle is handle), None)
            if mine is None:
                return handle
            ready = [m for m in members if m.ready]
            target = move_to([len(m.jobs) for m in ready], len(mine.jobs))
            if target is None:
                return handle
            best = ready[target]
            mine.jobs.discard(job_id)
            best.jobs.add(job_id)
            if not mine.jobs:
                mine.idle_since = time.monotonic()
            logger.info("pool: job %s moves from %s to %s", job_id, mine.name, best.name)
            return best.handle

    def handles(self, key: ModelSpec, *, ready: bool = False) -> list[Any]:
        """The members of ``key`` (with ``ready``: only those whose actor has started)."""
        with self._lock:
            members = self._members.get(key, [])
            if ready:
                self._poll_ready(members)
            return [m.handle for m in members if m.ready or not ready]

    def invalidate(self, key: ModelSpec, handle: Any) -> None:
        """Forget ``handle`` (it died); its jobs get another member when they retry."""
        with self._lock:
            members = self._members.get(key, [])
            self._members[key] = [m for m in members if m.handle is not handle]

    # -- sizing ----------------------------------------------------------------------------------
    def size(self, key: ModelSpec) -> int:
        with self._lock:
            return len(self._members.get(key, []))

    def sizes(self) -> dict[ModelSpec, int]:
        with self._lock:
            return {key: len(members) for key, members in self._members.items()}

    def keys(self) -> list[ModelSpec]:
        with self._lock:
            return list(self._members)

    def scale(self, key: ModelSpec, target: int) -> tuple[int, int]:
        """Grow to ``target`` members now, or shrink towards it by removing members idle longer
        than the policy's ``idle_s``; returns (members added, members removed). A model grows
        only after :meth:`register` (or :meth:`acquire`) saw one of its jobs."""
        import ray

        added = removed = 0
        with self._lock:
            members = self._members.setdefault(key, [])
            while len(members) < target and key in self._batch:
                members.append(self._create(key))
                added += 1
            now = time.monotonic()
            idle = sorted(
                (m for m in members if not m.jobs and now - m.idle_since >= self.policy.idle_s),
                key=lambda m: m.idle_since,
            )
            for member in idle[: max(0, len(members) - target)]:
                members.remove(member)
                ray.kill(member.handle)
                removed += 1
                self.removed += 1
            if not members:
                del self._members[key]
        return added, removed

    def request_resources(self) -> None:
        """Tell the cluster autoscaler how many member-sized bundles the pools want (a
        persistent hint, replaced on every change; empty when the pools are empty)."""
        if self.actor_gpus <= 0:
            return
        bundles = [{"GPU": self.gpus_for(key)} for key, n in self.sizes().items() for _ in range(n)]
        if bundles == self._requested:
            return
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
        self._requested = bundles

    def throughput(self, key: ModelSpec) -> float | None:
        """Mean measured frames/s of the model's members, over the wall-clock time they had a
        call in flight (idle time left out), or None before any measurement."""
        with self._lock:
            rates = [m.fps for m in self._members.get(key, []) if m.fps]
        return sum(rates) / len(rates) if rates else None

    def poll_stats(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """Each ready member's load counters (``SapiensWorker.stats``), with its name and
        model; also updates the throughput estimates."""
        import ray

        with self._lock:
            members = [(s, m) for s, ms in self._members.items() for m in ms]
            for spec, _ in members:
                self._poll_ready(self._members[spec])
            members = [(s, m) for s, m in members if m.ready]
        refs = [m.handle.stats.remote() for _, m in members]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
        out = []
        for (spec, member), ref in zip(members, refs, strict=True):
            if ref not in ready:
                continue
            try:
                stats = ray.get(ref)
            except Exception:  # a dying member: its job's retry will invalidate it
                continue
            prev, member.last_stats = member.last_stats, stats
            if prev is not None:
                frames = stats["frames"] - prev["frames"]
                # Wall-clock working time (cropping, decoding, waiting included), not forward
                # time alone, which would overstate what a member can take.
                busy = stats["active_s"] - prev["active_s"]
                if frames > 0 and busy > 0:
                    rate = frames / busy
                    member.fps = rate if member.fps is None else 0.7 * member.fps + 0.3 * rate
            out.append(
                {
                    "actor": member.name,
                    "size": spec.size,
                    "jobs": len(member.jobs),
                    **stats,
                }
            )
        return out

    def shutdown(self) -> None:
        import ray

        with self._lock:
            for members in self._members.values():
                for member in members:
                    ray.kill(member.handle)
            self._members.clear()
        if self._requested:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])
            self._requested = []

    @property
    def actor_gpus(self) -> float:
        """GPUs per member (detected on first use when the policy leaves it open)."""
        if self._gpus is None:
            self._gpus = detected_gpus()
        return self._gpus

    def gpus_for(self, key: ModelSpec) -> float:
        """GPUs a member of ``key`` asks for: the policy's ``actor_gpus`` when given; else 0
        without a GPU, and with one the share of a device its memory allows
        (:func:`gpu_share`), so members of several models fit on one device."""
        if self.policy.actor_gpus is not None or self.actor_gpus <= 0:
            return self.actor_gpus
        if self._gpu_gib is None:
            self._gpu_gib = self.policy.gpu_memory_gib or detected_gpu_memory_gib() or 80.0
        return gpu_share(key, self._gpu_gib)

    # -- internals (lock held) -------------------------------------------------------------------
    def _create(self, key: ModelSpec) -> _Member:
        import ray

        name = f"sapiens-stream/infer/{self.created}"
        batch_size, deadline_ms = self._batch[key]
        handle = (
            ray.remote(num_cpus=1, num_gpus=self.gpus_for(key), max_concurrency=self.concurrency)(
                SapiensWorker
            )
            .options(name=name)
            .remote(key, batch_size=batch_size, batch_deadline_ms=deadline_ms)
        )
        self.created += 1
        logger.info("pool: started %s (%s, batch %d)", name, key.size, batch_size)
        return _Member(handle=handle, name=name, ready_ref=handle.stats.remote())

    @staticmethod
    def _poll_ready(members: list[_Member]) -> None:
        import ray

        waiting = [m for m in members if not m.ready]
        if not waiting:
            return
        done, _ = ray.wait([m.ready_ref for m in waiting], num_returns=len(waiting), timeout=0)
        for member in waiting:
            if member.ready_ref in done:
                member.ready = True
