"""Fixtures for the storage unit tests (no server, no network)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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
