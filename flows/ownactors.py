"""A job attempt's own actors: a private Sapiens actor, or split placement's backbone, heads
and post-processing actor. They are reserved at once in one placement group, so a job either
gets everything it needs or waits whole: jobs beyond the cluster's capacity queue instead of
each holding part of what it needs (which deadlocks them). A service's shared Sapiens actors
and the pooled stages are not a job's own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from actors.infer import SapiensWorker
from actors.split import BackboneWorker, HeadWorker, PostWorker
from flows.plan import JobPlan
from flows.pool import ACTOR_CONCURRENCY, detected_gpus
from flows.stagepool import stage_name
from flows.watch import Watchdog

__all__ = ["kill", "own_actors", "private_gpus", "wait_ready"]

logger = logging.getLogger(__name__)


def own_actors(
    plan: JobPlan,
    attempt: int,
    watch: Watchdog,
    gpu: float,
    shared_infer: Any,
    made: dict[str, Any],
) -> tuple[Any, dict[str, Any], Any]:
    """The attempt's Sapiens side: the shared actor, else a private one, or the split actors;
    returns (infer or backbone, task -> head actor, post actor). What is made goes into
    ``made`` (``pg`` too) as it is made, so a caller can undo a failure part-way."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    spec = plan.spec
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

    if spec.placement == "split":
        made.update(_split_actors(plan, gpu, named))
        heads = {t: made[f"head-{t}"] for t in spec.tasks}
        return made["backbone"], heads, made["post"]
    if shared_infer is not None:
        return shared_infer, {}, None
    made["infer"] = infer = (
        ray.remote(num_cpus=1, num_gpus=gpu, max_concurrency=ACTOR_CONCURRENCY)(SapiensWorker)
        .options(**named("infer"))
        .remote(plan.infer)
    )
    return infer, {}, None


def kill(handles: list[Any], pg: Any) -> None:
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
