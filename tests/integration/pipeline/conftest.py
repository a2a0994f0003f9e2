"""Fixtures of the pipeline tests: a real local Ray cluster per test module."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    import ray

    ray.init(
        address="local",  # never join another Ray instance running on this machine
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
