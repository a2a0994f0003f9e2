"""Fixtures of the load tests: one private local Ray cluster per module."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import local_ray

# Logical CPUs of the cluster: a running job holds 1.25 (decode 0.5, persons 0.5, writer 0.25)
# and the shared Sapiens actor 1, so 4 jobs at once need 6. (With fewer, the jobs that do not
# fit wait for a whole set of actors: see test_load_capacity.py.)
LOAD_CPUS = 6


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    with local_ray(LOAD_CPUS) as ray:
        yield ray
