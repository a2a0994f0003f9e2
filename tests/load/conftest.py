"""Fixtures of the load tests: one private local Ray cluster per module."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

# Logical CPUs of the cluster: a running job holds 1.25 (decode 0.5, persons 0.5, writer 0.25)
# and the shared Sapiens actor 1, so 4 jobs at once need 6. (With fewer, the jobs that do not
# fit wait for a whole set of actors: see test_load_capacity.py.)
LOAD_CPUS = 6


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    import ray

    ray.init(
        address="local",  # a new cluster even if `ray start` left one (or its address file)
        num_cpus=LOAD_CPUS,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
