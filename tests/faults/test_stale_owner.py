"""A live stale owner: a `serve` frozen (SIGSTOP) past its lease while another service takes
its job over and finishes it, then thawed (SIGCONT). The thawed owner must neither write to the
store nor record anything: the store equals a clean run's and says complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.plan import plan_job
from flows.run import run_on_ray
from storage import TERMINAL_STATES, Coordinator, CoordinatorConfig, connect, open_result
from tests.faults._serve import TTL_S
from tests.faults.test_faults import _serving, _spec, _wait
from tests.integration.pipeline.test_run import _assert_same_store

pytestmark = [pytest.mark.ray, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~45 s of two services and a frozen lease: `make soak`; the fencing rule
# itself is covered in CI by tests/unit/storage/test_storage_fencing.py
def test_a_thawed_stale_owner_changes_nothing(
    ray_cluster, redis_process, shared_clip: Path, tmp_path: Path
) -> None:
    clean = run_on_ray(plan_job(_spec(shared_clip, tmp_path / "clean", "clean")))
    assert clean.state == "succeeded", clean.error
    coord = Coordinator(connect(redis_process.url).client, CoordinatorConfig(heartbeat_ttl_s=TTL_S))
    spec = _spec(shared_clip, tmp_path, "stale-owner")
    store = plan_job(spec).store_url
    coord.submit(spec.to_dict(), job_id=spec.job_id)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "tests.faults._serve", redis_process.url, "serve-first"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(coord, spec.job_id, lambda r: r.committed_frames >= 8, timeout=180)
        os.kill(first.pid, signal.SIGSTOP)  # a GC pause, a partition: the owner goes silent
        time.sleep(TTL_S + 1)
        with _serving(coord, "serve-second"):
            record = _wait(coord, spec.job_id, lambda r: r.state in TERMINAL_STATES, 240)
        assert record.state == "succeeded" and record.owner == "serve-second", record.error
        done = open_result(store)
        assert done.status == "complete"
        frames = done.num_frames

        os.kill(first.pid, signal.SIGCONT)  # the stale owner wakes up mid-job
        deadline = time.monotonic() + 60
        while not any(w in log.read_text() for w in ("lease lost", "lost leases")):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # let whatever it still had in flight land (or be refused)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
            first.wait(timeout=30)
    after = open_result(store)
    assert (after.status, after.num_frames) == ("complete", frames)
    assert coord.get(spec.job_id).state == "succeeded"
    _assert_same_store(store, clean.store_url)
