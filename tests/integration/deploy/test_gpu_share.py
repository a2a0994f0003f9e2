"""Members of different models share one GPU when their memory allows (fractional GPUs).

The cluster declares one GPU as a scheduling resource (these machines have none; the actors
run their model on the CPU): what is tested is what Ray is asked for and whether it places
both members at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from actors.infer import InferSpec, ModelSpec
from flows.pool import InferPool, ScalePolicy
from tests.conftest import local_ray

pytestmark = [pytest.mark.ray]

TASKS = ("pose",)


@pytest.fixture(scope="module")
def one_gpu_cluster() -> Iterator[ModuleType]:
    with local_ray(3, num_gpus=1) as ray:
        yield ray


def _ready(ray: ModuleType, handle: object, timeout: float) -> bool:
    ready, _ = ray.wait([handle.stats.remote()], timeout=timeout)  # type: ignore[attr-defined]
    return bool(ready)


def _specs() -> list[InferSpec]:
    keys = [ModelSpec(num_keypoints=17, seed=s, device="cpu") for s in (0, 1)]
    return [InferSpec(tasks=TASKS, model=k, batch_size=2) for k in keys]


def test_two_models_share_one_gpu(one_gpu_cluster: ModuleType) -> None:
    ray = one_gpu_cluster
    pool = InferPool(ScalePolicy(max_actors=1, gpu_memory_gib=80.0))
    try:
        a, b = (pool.acquire(spec, f"job{i}") for i, spec in enumerate(_specs()))
        assert pool.gpus_for(_specs()[0].model) == 0.125  # 8 tiny models fit 80 GiB
        assert _ready(ray, a, 120) and _ready(ray, b, 120)  # both placed on the one GPU
        deadline = time.monotonic() + 10
        while ray.available_resources().get("GPU", 0) != pytest.approx(0.75):
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.2)
    finally:
        pool.shutdown()


def test_a_whole_gpu_per_member_leaves_the_second_model_waiting(
    one_gpu_cluster: ModuleType,
) -> None:
    """The control: asking a whole device per member, the second model cannot be placed."""
    ray = one_gpu_cluster
    pool = InferPool(ScalePolicy(max_actors=1, actor_gpus=1.0))
    try:
        a, b = (pool.acquire(spec, f"job{i}") for i, spec in enumerate(_specs()))
        assert _ready(ray, a, 120)
        assert not _ready(ray, b, 3)
    finally:
        pool.shutdown()
