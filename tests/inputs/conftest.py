"""Fixtures of the malformed-input suite: the generated cases with their servers, and Ray."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import av
import pytest

from tests.conftest import local_ray
from tests.inputs.generate import Case, clip_bytes, generate, network_servers


@pytest.fixture(scope="session")
def input_cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Case]]:
    """Every case by name, written once per session; the network servers run meanwhile."""
    missing = {"libx264", "libx264rgb"} - set(av.codecs_available)
    if missing:
        pytest.skip(f"this PyAV build lacks the encoders {sorted(missing)}")
    root = tmp_path_factory.mktemp("inputs")
    with network_servers(clip_bytes(root)) as net:
        yield {case.name: case for case in generate(root / "cases", net)}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    """A new local Ray cluster for the module (never one already running on the machine), with
    8 logical CPUs so that several jobs run at once."""
    with local_ray(8) as ray:
        yield ray
