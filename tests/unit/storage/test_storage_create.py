"""Store creation is all or nothing: a store whose creation was interrupted counts as absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore

import storage._store
from storage import (
    BlockWriter,
    StaleOwnerError,
    StorageError,
    StoreNotFoundError,
    StoreSpec,
    Writer,
    open_result,
)
from storage.synthetic import synthetic_frame

SPEC = StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=4)
JOB = {"job_id": "c"}
N = 6


class Interrupted(Exception):
    """Stands for the process dying in the middle of creating a store."""


def _group(url: str) -> zarr.Group:
    store = FsspecStore.from_url(url, read_only=True) if "://" in url else url
    return zarr.open_group(store, mode="r", use_consolidated=False)


def arrays(url: str) -> dict[str, tuple[tuple[int, ...], bytes]]:
    return {
        path: (node.shape, np.asarray(node[...]).tobytes())
        for path, node in _group(url).members(max_depth=None)
        if isinstance(node, zarr.Array)
    }


def run(url: str, **kwargs: Any) -> str:
    w = Writer.create(url, SPEC, job=JOB, **kwargs)
    for i in range(N):
        w.add(synthetic_frame(SPEC, i, n_persons=i % 3))
    w.finalize()
    return url


def interrupted_create(url: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> None:
    """Create a store but stop after its first array, as a killed process would."""
    real = storage._store.create_array
    made: list[object] = []

    def create_array(*args: Any, **kw: Any) -> Any:
        if made:
            raise Interrupted
        made.append(real(*args, **kw))
        return made[-1]

    with monkeypatch.context() as m:
        m.setattr(storage._store, "create_array", create_array)
        with pytest.raises(Interrupted):
            Writer.create(url, SPEC, job=JOB, **kwargs)
    assert len(arrays(url)) == 1  # the root exists, with the first array only


def test_an_interrupted_creation_reads_as_absent(
    place: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = place("job")
    interrupted_create(url, monkeypatch)
    for call in (open_result, Writer.resume, BlockWriter):
        with pytest.raises(StoreNotFoundError, match="creation never finished"):
            call(url)


def test_create_replaces_an_interrupted_creation(
    place: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = place("job")
    interrupted_create(url, monkeypatch)
    run(url)
    assert open_result(url).num_frames == N
    assert arrays(url) == arrays(run(place("clean")))


def test_create_replaces_a_directory_holding_only_a_temporary_file(tmp_path: Path) -> None:
    url = tmp_path / "job.zarr"
    url.mkdir()
    (url / "zarr.json.0123abcd.partial").write_bytes(b'{"zarr_fo')  # killed mid-write
    with pytest.raises(StoreNotFoundError):
        open_result(url)
    run(str(url))
    assert open_result(url).num_frames == N
    assert not list(url.rglob("*.partial"))


def test_create_replaces_nothing_but_an_unfinished_store_it_may_own(
    tmp_path: Path, memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted_create(memory_url, monkeypatch, fence=5)
    with pytest.raises(StaleOwnerError, match="token 4 is older"):
        Writer.create(memory_url, SPEC, job=JOB, fence=4)
    assert Writer.create(memory_url, SPEC, job=JOB, fence=5).fence == 5
    with pytest.raises(StorageError, match="already exists"):  # now a finished store
        Writer.create(memory_url, SPEC, job=JOB, fence=6)
    other = zarr.open_group(tmp_path / "other.zarr", mode="w", attributes={"mine": True})
    other.create_array("x", shape=(3,), dtype="i4")
    with pytest.raises(StorageError, match="already exists"):
        Writer.create(tmp_path / "other.zarr", SPEC, job=JOB)
    assert _group(str(tmp_path / "other.zarr")).attrs["mine"] is True
    assert "x" in _group(str(tmp_path / "other.zarr"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a store")
    with pytest.raises(StorageError, match="already exists"):
        Writer.create(tmp_path / "notes", SPEC, job=JOB)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "not a store"
