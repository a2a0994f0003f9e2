"""Fixtures of the pipeline tests: a real local Ray cluster per test module."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import local_ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    with local_ray(4) as ray:
        yield ray
