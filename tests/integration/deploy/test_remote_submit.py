"""`sapiens-stream submit --address`: a job sent through the Ray Jobs API of a real Ray head
(dashboard on, token authentication on) runs on that cluster and registers in Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.remote import ray_submission_id
from storage import Coordinator, connect, open_result, stop_embedded
from tests.integration.deploy.cluster import free_port, ray_head

pytestmark = [pytest.mark.ray, pytest.mark.redis]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env.pop("SAPIENS_STREAM_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_submit_address_runs_the_job_on_the_cluster(shared_clip: Path, tmp_path: Path) -> None:
    from ray.job_submission import JobStatus, JobSubmissionClient

    out = tmp_path / "out"
    port = free_port()
    try:
        with ray_head(tmp_path, dashboard_port=port):
            api = f"http://127.0.0.1:{port}"
            argv = ["submit", str(shared_clip), "--address", api, "--job-id", "remote-1"]
            argv += ["--stride", "60", "--max-side", "96", "--output-root", str(out)]
            sub = _cli(*argv)
            assert sub.returncode == 0, sub.stderr
            assert sub.stdout.strip() == "remote-1"
            client = JobSubmissionClient(api)
            deadline = time.monotonic() + 240
            while (status := client.get_job_status(ray_submission_id("remote-1"))) not in (
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
                JobStatus.STOPPED,
            ):
                assert time.monotonic() < deadline, status
                time.sleep(1)
            logs = client.get_job_logs(ray_submission_id("remote-1"))
            assert status == JobStatus.SUCCEEDED, logs[-3000:]
            assert open_result(str(out / "remote-1.zarr")).num_frames == 6
            again = _cli(*argv)  # the same job id again: a clear refusal, exit code 2
            assert again.returncode == 2
            assert "remote-1" in again.stderr and api in again.stderr
        conn = connect(None, root=out)  # the job registered in the Redis the cluster uses
        try:
            record = Coordinator(conn.client).get("remote-1")
            assert record.state == "succeeded" and record.committed_frames == 6
        finally:
            conn.close()
    finally:
        stop_embedded(out)
