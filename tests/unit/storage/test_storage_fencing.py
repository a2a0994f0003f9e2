"""Store fencing: once a newer claim took a store over, the old owner can change nothing.

The store is compared with zarr directly (every array, bitwise), not through the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore

from storage import (
    InvalidValueError,
    ResumeState,
    SchemaMismatchError,
    StaleOwnerError,
    StorageError,
    StoreSpec,
    Writer,
    open_result,
    reopen_failed,
)
from storage.synthetic import synthetic_frame

SPEC = StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=8)
N = 24
JOB = {"job_id": "fenced"}


def frame(i: int, seed: int = 0) -> Any:
    return synthetic_frame(SPEC, i, n_persons=(i * 7) % 4, seed=seed)


def _group(url: str) -> zarr.Group:
    store = FsspecStore.from_url(url, read_only=True) if "://" in url else url
    return zarr.open_group(store, mode="r", use_consolidated=False)


def arrays(url: str) -> dict[str, tuple[tuple[int, ...], str, bytes]]:
    """Shape, dtype and raw bytes of every array of the store."""
    out = {}
    for path, node in _group(url).members(max_depth=None):
        if isinstance(node, zarr.Array):
            data = np.asarray(node[...])
            out[path] = (data.shape, str(data.dtype), data.tobytes())
    return out


def meta(url: str) -> dict[str, Any]:
    return dict(_group(url).attrs["sapiens_stream"])


def clean_run(url: str) -> str:
    w = Writer.create(url, SPEC, job=JOB)
    for i in range(N):
        w.add(frame(i))
    w.finalize()
    return url


def test_a_stale_owner_cannot_commit_or_fail_a_job_taken_over(
    place: Callable[[str], str],
) -> None:
    url = place("job")
    a = Writer.create(url, SPEC, job=JOB, fence=1)
    for i in range(16):
        a.add(frame(i))
    assert a.watermark == 16
    b = Writer.resume(url, fence=2)  # A paused past its lease; B holds the newer claim
    assert b.watermark == 16
    for i in range(16, N):
        b.add(frame(i))
    assert b.finalize() == N
    with pytest.raises(StaleOwnerError, match="no longer owns"):
        for i in range(16, N):  # A wakes up and commits its in-flight batch ...
            a.add(frame(i))
    with pytest.raises(StaleOwnerError):
        a.mark_failed("lease lost")  # ... then reports the job failed
    assert arrays(url) == arrays(clean_run(place("clean")))
    got = meta(url)
    assert (got["status"], got["committed_frames"], got["fence"]) == ("complete", N, 2)


def test_a_stale_owner_writes_no_block_data(tmp_path: Path) -> None:
    url = str(tmp_path / "job.zarr")
    a = Writer.create(url, SPEC, job=JOB, fence=3, capacity_frames=N)
    for i in range(8):
        a.add(frame(i))
    Writer.resume(url, fence=4)
    files = {p: p.read_bytes() for p in sorted(Path(url).rglob("*")) if p.is_file()}
    with pytest.raises(StaleOwnerError):
        for i in range(8, 16):
            a.add(frame(i, seed=1))  # other bytes than the new owner would write
    assert {p: p.read_bytes() for p in sorted(Path(url).rglob("*")) if p.is_file()} == files


def test_a_refused_writer_refuses_every_later_call(memory_url: str) -> None:
    a = Writer.create(memory_url, SPEC, job=JOB, fence=1)
    a.add(frame(0))
    Writer.resume(memory_url, fence=2)
    with pytest.raises(StaleOwnerError):
        a.sync_watermark()
    calls: list[Callable[[], object]] = [
        lambda: a.add(frame(1)),
        lambda: a.ensure_capacity(64),
        lambda: a.save_checkpoint(ResumeState(frames=0, next_source_index=0)),
        lambda: a.commit_block(0, [frame(i) for i in range(8)]),
        lambda: a.finalize(),
        lambda: a.mark_failed("x"),
    ]
    for call in calls:
        with pytest.raises(StaleOwnerError):
            call()
    assert meta(memory_url)["status"] == "running"


@pytest.mark.parametrize(
    ("recorded", "token", "expectation"),
    [
        (5, 4, pytest.raises(StaleOwnerError, match="token 4 is older")),
        (5, None, pytest.raises(StaleOwnerError, match="an unfenced writer")),
        (5, 5, nullcontext()),
        (5, 9, nullcontext()),
        (None, 1, nullcontext()),
        (None, None, nullcontext()),
    ],
)
def test_resume_compares_tokens(
    memory_url: str,
    recorded: int | None,
    token: int | None,
    expectation: AbstractContextManager[object],
) -> None:
    Writer.create(memory_url, SPEC, job=JOB, fence=recorded)
    with expectation:
        w = Writer.resume(memory_url, fence=token)
        assert w.fence == token
        assert meta(memory_url)["fence"] == token


@pytest.mark.parametrize("token", [-1, True, 2.0, "3"])
def test_a_token_is_a_non_negative_int(memory_url: str, token: Any) -> None:
    with pytest.raises(InvalidValueError, match="fencing token"):
        Writer.create(memory_url, SPEC, job=JOB, fence=token)


def test_the_owner_of_a_finished_job_cannot_resume_it(memory_url: str) -> None:
    w = Writer.create(memory_url, SPEC, job=JOB, fence=1)
    w.finalize()
    with pytest.raises(StorageError, match="only running stores resume"):
        Writer.resume(memory_url, fence=2)
    assert meta(memory_url)["fence"] == 1


def test_a_malformed_recorded_token_is_a_clear_error_for_writers_only(memory_url: str) -> None:
    Writer.create(memory_url, SPEC, job=JOB, fence=1).add(frame(0))
    group = zarr.open_group(FsspecStore.from_url(memory_url), mode="r+", use_consolidated=False)
    group.attrs["sapiens_stream"] = {**meta(memory_url), "fence": "7"}
    with pytest.raises(SchemaMismatchError, match="fencing token '7', expected an int"):
        Writer.resume(memory_url, fence=9)
    assert open_result(memory_url).num_frames == 0  # readers ignore the token


def test_a_retry_reopens_a_failed_store_and_finishes_it_equal_to_a_clean_run(
    place: Callable[[str], str],
) -> None:
    url = place("job")
    a = Writer.create(url, SPEC, job=JOB, fence=1)
    for i in range(12):
        a.add(frame(i))
    a.mark_failed("the source dropped")
    assert reopen_failed(url, fence=2)
    got = meta(url)
    assert (got["status"], got["fence"], got["retries"]) == ("running", 2, 1)
    assert "error" not in got
    with pytest.raises(StaleOwnerError):
        for i in range(12, 16):  # the failed run's writer owns nothing any more
            a.add(frame(i))
    b = Writer.resume(url, fence=2)
    assert b.watermark == 8  # the committed frames are kept, not computed again
    for i in range(8, N):
        b.add(frame(i))
    assert b.finalize() == N
    assert arrays(url) == arrays(clean_run(place("clean")))
    assert not reopen_failed(url, fence=3)  # complete: nothing to reopen
    assert meta(url)["status"] == "complete"


def test_reopening_needs_a_failed_store_and_the_newest_token(memory_url: str) -> None:
    assert not reopen_failed(memory_url, fence=1)  # no store: the retry creates one
    w = Writer.create(memory_url, SPEC, job=JOB, fence=5)
    assert not reopen_failed(memory_url, fence=6)  # running: resumed as it is
    w.mark_failed("x")
    with pytest.raises(StaleOwnerError, match="token 5; a retry with token 4 cannot"):
        reopen_failed(memory_url, fence=4)
    with pytest.raises(InvalidValueError, match="fencing token"):
        reopen_failed(memory_url, fence=-1)
    assert (meta(memory_url)["status"], meta(memory_url)["fence"]) == ("failed", 5)
