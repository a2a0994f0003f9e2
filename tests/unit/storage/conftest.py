"""Fixtures for the storage unit tests (no server, no network)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest

from storage.schema import StoreSpec


@pytest.fixture
def small_spec() -> StoreSpec:
    """All four tasks on a tiny frame, 4 frames per block, K=17."""
    return StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=4)


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh memory:// location, removed afterwards."""
    name = f"sapiens-test-{uuid.uuid4().hex}"
    yield f"memory://{name}/store.zarr"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)


@pytest.fixture(params=["local", "memory"])
def place(request: pytest.FixtureRequest, tmp_path: Path, memory_url: str) -> Callable[[str], str]:
    """Store locations of one backend, local or memory: ``place(name)``."""
    if request.param == "local":
        return lambda name: str(tmp_path / f"{name}.zarr")
    return lambda name: memory_url.replace("store.zarr", f"{name}.zarr")
