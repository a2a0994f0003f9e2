"""Result stores under several processes: disjoint writers, kill -9, concurrent readers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from storage_procs import PP_SPEC, SPEC, make_frame, snapshot

from storage import StorageError, StoreSpec, Writer, open_result

Spawn = Callable[..., subprocess.Popen[str]]


def clean_store(path: Path, n: int, spec: StoreSpec = SPEC) -> Path:
    w = Writer.create(path, spec, job={"job_id": "p"})
    for i in range(n):
        w.add(make_frame(spec, i))
    w.finalize()
    return path


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    _out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err


def test_two_processes_writing_disjoint_blocks_lose_nothing(tmp_path: Path, spawn: Spawn) -> None:
    url = tmp_path / "job.zarr"
    owner = Writer.create(url, SPEC, job={"job_id": "p"}, capacity_frames=64)
    a = spawn("write-blocks", str(url), *map(str, range(0, 16, 2)))
    b = spawn("write-blocks", str(url), *map(str, range(1, 16, 2)))
    finish(a)
    finish(b)
    assert owner.sync_watermark() == 64
    owner.finalize()
    r = open_result(url)
    for i in (0, 5, 31, 62, 63):
        src, got = make_frame(SPEC, i), r.frame(i)
        assert np.array_equal(got.part, src.part)
        assert np.array_equal(got.persons.track_id, src.track_id)
    assert snapshot(url) == snapshot(clean_store(tmp_path / "clean.zarr", 64))


def test_two_processes_writing_per_person_blocks(tmp_path: Path, spawn: Spawn) -> None:
    """The same with per-person slots (schema v2): each process writes only its blocks' shards."""
    url = tmp_path / "job.zarr"
    owner = Writer.create(url, PP_SPEC, job={"job_id": "p"}, capacity_frames=32)
    a = spawn("write-blocks", str(url), *map(str, range(0, 8, 2)))
    b = spawn("write-blocks", str(url), *map(str, range(1, 8, 2)))
    finish(a)
    finish(b)
    assert owner.sync_watermark() == 32
    owner.finalize()
    r = open_result(url)
    for i in (1, 6, 30):
        src, got = make_frame(PP_SPEC, i), r.frame(i)
        assert got.patches is not None and src.part_patch is not None
        assert all(
            np.array_equal(g, s)
            for g, s in zip(got.patches.part_patch, src.part_patch, strict=True)
        )
    assert snapshot(url) == snapshot(clean_store(tmp_path / "clean.zarr", 32, PP_SPEC))


def _wait_for_watermark(url: Path, frames: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if open_result(url).num_frames >= frames:
                return
        except StorageError:  # not created yet
            pass
        assert time.monotonic() < deadline, f"writer never reached {frames} frames"
        time.sleep(0.01)


def test_writer_killed_mid_commit_resumes_byte_identical(tmp_path: Path, spawn: Spawn) -> None:
    url = tmp_path / "job.zarr"
    n = 64
    # Two kill points, each a little after a commit landed (so it falls inside the next block's
    # writes whatever the machine's load); the store must come out the same each time.
    for target, extra in ((8, 0.03), (24, 0.07)):
        proc = spawn("write-frames", str(url), str(n), "--delay", "0.02", *(
            ["--resume"] if url.exists() else []))  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        _wait_for_watermark(url, target)
        time.sleep(extra)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    w = Writer.resume(url)
    assert 0 < w.watermark < n
    for i in range(w.watermark, n):
        w.add(make_frame(SPEC, i))
    w.finalize()
    assert snapshot(url) == snapshot(clean_store(tmp_path / "clean.zarr", n))


def test_reader_sees_a_growing_prefix_never_a_torn_frame(tmp_path: Path, spawn: Spawn) -> None:
    url = tmp_path / "job.zarr"
    n = 48
    proc = spawn("write-frames", str(url), str(n), "--delay", "0.02")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    reader = open_result(url)
    seen = [reader.num_frames]
    checked = 0
    while proc.poll() is None or reader.status != "complete":
        frames = reader.refresh()
        assert frames >= seen[-1]
        assert frames % SPEC.frames_per_shard == 0 or reader.status == "complete"
        seen.append(frames)
        if frames:
            i = frames - 1  # the newest committed frame must be complete and exact
            src, got = make_frame(SPEC, i), reader.frame(i)
            assert np.array_equal(got.part, src.part)
            assert np.array_equal(got.person_map, src.person_map)
            assert np.array_equal(got.persons.track_id, src.track_id)
            assert np.array_equal(np.isnan(got.depth), np.isnan(src.depth))
            checked += 1
        time.sleep(0.01)
    finish(proc)
    assert reader.refresh() == n
    assert len(set(seen)) >= 4  # it really grew while we watched
    assert checked > 5
