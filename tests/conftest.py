"""Shared test configuration."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Every Ray cluster of the suite -- local ones from ray.init() and heads started with
# `ray start` -- runs with token authentication. Ray reads these when it is imported, so they
# are set here, before any test module imports it.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

SHARED_CLIP = ROOT.parent / "shared" / "data" / "people_walking_720p.avi"


@pytest.fixture(scope="session")
def shared_clip() -> Path:
    """The real 720p clip with walking people (kept outside the repository)."""
    if not SHARED_CLIP.is_file():
        pytest.skip(f"test clip not found at {SHARED_CLIP}")
    return SHARED_CLIP


@contextmanager
def local_ray(num_cpus: int, num_gpus: int = 0) -> Iterator[ModuleType]:
    """A new local Ray cluster with ``num_cpus`` logical CPUs (never one already running on the
    machine, nor one a `ray start` left an address file for); shut down at the end.
    ``num_gpus``: a GPU resource for scheduling only (these machines have no GPU)."""
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
