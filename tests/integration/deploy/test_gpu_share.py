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
    deadline = time.monotonic() + 120  # the members of an earlier test may still be dying
    while ray.available_resources().get("GPU", 0) < 1.0:
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.2)
    pool = InferPool(ScalePolicy(max_actors=1, actor_gpus=1.0))
    try:
        a, b = (pool.acquire(spec, f"job{i}") for i, spec in enumerate(_specs()))
        assert _ready(ray, a, 120)
        assert not _ready(ray, b, 3)
    finally:
        pool.shutdown()


def test_person_stage_members_ask_for_a_share_of_a_gpu(one_gpu_cluster: ModuleType) -> None:
    """On a cluster with GPUs the person stage's members hold a tenth of one (detectors with
    weights run there, ``detection.device`` ``auto``); an explicit share wins; the other
    stages hold none."""
    from flows.scaling import DETECTOR_GPU_SHARE, detector_gpus
    from flows.stagepool import StagePolicy, StagePool

    def gpus(handle: object) -> float:
        def assigned(_actor: object) -> float:
            import ray

            return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))

        return float(one_gpu_cluster.get(handle.__ray_call__.remote(assigned)))  # type: ignore[attr-defined]

    assert detector_gpus() == DETECTOR_GPU_SHARE
    auto = StagePool(StagePolicy(min_actors=0), owner="gpu-auto")
    fixed = StagePool(StagePolicy(min_actors=0, detector_gpus=0.25), owner="gpu-fixed")
    try:
        assert gpus(auto.acquire("persons", "a")) == pytest.approx(DETECTOR_GPU_SHARE)
        assert gpus(auto.acquire("writer", "a")) == 0.0
        assert gpus(fixed.acquire("persons", "b")) == pytest.approx(0.25)
    finally:
        auto.shutdown()
        fixed.shutdown()
