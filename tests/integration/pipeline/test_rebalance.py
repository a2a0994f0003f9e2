"""Jobs move between the Sapiens actors of one model: real actors on a local Ray cluster.

Three jobs start on the only member; a second member is added (as the autoscaler does when the
backlog grows); the next ``rebalance`` moves one job there, and that job's next batch runs on
the new member and gives the results the first member gives."""

from __future__ import annotations

import time

import pytest

from actors.infer import InferSpec, ModelSpec
from flows.pool import InferPool, ScalePolicy
from tests._compare import assert_results_equal
from tests.unit.actors.test_infer_batching import _call

pytestmark = [pytest.mark.ray]


def _ready(pool: InferPool, key: ModelSpec, handle, timeout_s: float = 120.0) -> None:
    """Wait until the pool itself counts ``handle`` as started (jobs move only to those)."""
    deadline = time.monotonic() + timeout_s
    while not any(h is handle for h in pool.handles(key, ready=True)):
        assert time.monotonic() < deadline, "a member never started"
        time.sleep(0.2)


def test_a_job_moves_to_a_new_member_and_gets_the_same_results(ray_cluster) -> None:
    ray = ray_cluster
    spec = InferSpec(
        tasks=("pose", "depth"), model=ModelSpec(num_keypoints=17, device="cpu"), batch_size=2
    )
    key = spec.model
    pool = InferPool(ScalePolicy(max_actors=2, actor_gpus=0))
    jobs = ["job-a", "job-b", "job-c"]
    try:
        first = {pool.acquire(spec, j) for j in jobs}
        assert len(first) == 1 and pool.size(key) == 1  # all on the only member
        (old,) = first
        _ready(pool, key, old)
        assert pool.rebalance(key, "job-a", old) is old  # nowhere to go yet
        assert pool.scale(key, 2) == (1, 0)
        (new,) = [h for h in pool.handles(key) if h is not old]
        _ready(pool, key, new)
        moved = {j: pool.rebalance(key, j, old) for j in jobs}
        # One job moves (3 vs 0); then 2 vs 1 is no reason to move another.
        assert list(moved.values()).count(new) == 1
        mover = next(j for j, h in moved.items() if h is new)
        batch, persons = _call(0)
        request = {"tasks": spec.tasks, "dense_mode": "crop"}
        there = ray.get(new.__call__.remote(batch, persons, 0, (48, 64), job=mover, **request))
        here = ray.get(old.__call__.remote(batch, persons, 0, (48, 64), job="job-b", **request))
        stats = ray.get(new.stats.remote())
        assert stats["calls"] == 1 and stats["jobs"] == 1
        for a, b in zip(here, there, strict=True):
            assert_results_equal(a, b)
        for j in jobs:
            pool.release(key, j)
        assert pool.rebalance(key, mover, new) is new  # released jobs are not counted
    finally:
        pool.shutdown()
