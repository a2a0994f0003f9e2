"""Exactly-once output: a worker killed mid-job is replaced; the job runs to one result."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from storage_procs import SPEC, delete_prefix, make_frame, snapshot

from storage import Coordinator, CoordinatorConfig, EmbeddedServer, Writer, open_result

pytestmark = pytest.mark.redis

Spawn = Callable[..., subprocess.Popen[str]]


def test_killed_consumer_job_is_reclaimed_and_finishes_once(
    tmp_path: Path, embedded_server: EmbeddedServer, prefix: str, spawn: Spawn
) -> None:
    client = redis.Redis.from_url(embedded_server.url)
    coord = Coordinator(client, CoordinatorConfig(prefix=prefix, heartbeat_ttl_s=1.0))
    out = tmp_path / "job.zarr"
    n = 32
    try:
        job = coord.submit({"output": str(out), "frames": n}).job_id
        first = spawn("worker", embedded_server.url, prefix, "worker-a", "--delay", "0.03")
        assert first.stdout is not None
        assert first.stdout.readline().startswith(f"claimed {job} attempt 1")
        deadline = time.monotonic() + 20
        while coord.get(job).committed_frames < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = coord.get(job).committed_frames
        assert 8 <= killed_at < n

        second = spawn("worker", embedded_server.url, prefix, "worker-b")
        stdout, stderr = second.communicate(timeout=60)
        assert second.returncode == 0, stderr
        assert f"claimed {job} attempt 2" in stdout
        resumed_at = int(stdout.split("resuming at ")[1].split()[0])
        assert resumed_at >= killed_at - SPEC.frames_per_shard  # the store's watermark wins

        rec = coord.get(job)
        assert (rec.state, rec.attempts, rec.owner) == ("succeeded", 2, "worker-b")
        assert rec.result == {"frames": n, "worker": "worker-b"}
        types = [e.type for e in coord.events(job)]
        assert types.count("succeeded") == 1 and "reclaimed" in types
        assert open_result(out).summary().frames == n

        clean = Writer.create(tmp_path / "clean.zarr", SPEC, job={"job_id": job})
        for i in range(n):
            clean.add(make_frame(SPEC, i))
        clean.finalize()
        assert snapshot(out) == snapshot(tmp_path / "clean.zarr")
    finally:
        delete_prefix(client, prefix)
        client.close()
