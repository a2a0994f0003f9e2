"""Fencing and creation across processes: a frozen stale owner, a creator killed midway."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from storage_procs import SPEC, make_frame, snapshot

from storage import StoreNotFoundError, Writer, open_result

Spawn = Callable[..., subprocess.Popen[str]]
N = 24


def clean_store(path: Path, n: int) -> Path:
    w = Writer.create(path, SPEC, job={"job_id": "fenced"})
    for i in range(n):
        w.add(make_frame(SPEC, i))
    w.finalize()
    return path


def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_frozen_owner_cannot_touch_the_store_after_a_takeover(
    tmp_path: Path, spawn: Spawn
) -> None:
    url = tmp_path / "job.zarr"
    a = spawn("stale-owner", str(url), str(N), "--fence", "1", "--pause", "2")
    assert a.stdout is not None
    assert a.stdout.readline().strip() == "committed 16"
    os.kill(a.pid, signal.SIGSTOP)  # A freezes between two commits, past its lease
    _wait_stopped(a.pid)
    try:
        b = Writer.resume(url, fence=2)  # B reclaimed the job with a newer token
        assert b.watermark == 16
        for i in range(16, N):
            b.add(make_frame(SPEC, i))
        assert b.finalize() == N
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 0, err
    assert out.split("\n")[:2] == ["add refused", "mark_failed refused"], out
    attrs = zarr.open_group(url, mode="r", use_consolidated=False).attrs["sapiens_stream"]
    assert (attrs["status"], attrs["committed_frames"], attrs["fence"]) == ("complete", N, 2)
    assert snapshot(url) == snapshot(clean_store(tmp_path / "clean.zarr", N))


def test_a_creator_killed_midway_leaves_no_store(tmp_path: Path, spawn: Spawn) -> None:
    url = tmp_path / "job.zarr"
    proc = spawn("create-stalled", str(url))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "one array"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (url / "zarr.json").exists()  # the kill left a partial store behind
    with pytest.raises(StoreNotFoundError, match="creation never finished"):
        Writer.resume(url)
    with pytest.raises(StoreNotFoundError, match="creation never finished"):
        open_result(url)
    w = Writer.create(url, SPEC, job={"job_id": "fenced"})
    for i in range(N):
        w.add(make_frame(SPEC, i))
    w.finalize()
    assert open_result(url).num_frames == N
    assert snapshot(url) == snapshot(clean_store(tmp_path / "clean.zarr", N))
