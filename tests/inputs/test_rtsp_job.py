"""A live job on Ray against a real RTSP server: it runs until cancelled, its results commit
while it runs (a reader sees the committed frames grow) and carry wall-clock times."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from flows.inline import JobOutcome
from flows.plan import plan_job
from flows.run import run_on_ray
from flows.spec import JobSpec
from storage import ResultReader, store_state
from tests.inputs.rtsp import rtsp_server

pytestmark = pytest.mark.ray


def test_live_job_commits_while_running_until_cancelled(
    ray_cluster: ModuleType, tmp_path: Path
) -> None:
    with rtsp_server(fps=10) as server:
        spec = JobSpec.from_dict(
            {
                "source": server.url,
                "job_id": "live",
                "output_root": str(tmp_path),
                "tasks": ["pose"],
                "sampling": {"target_fps": 4.0},
                "batch_size": 4,
            }
        )
        plan = plan_job(spec)
        stop, outcome = threading.Event(), []

        def job() -> None:
            should_stop = lambda: "cancelled" if stop.is_set() else None  # noqa: E731
            outcome.append(run_on_ray(plan, should_stop=should_stop, stall_s=30.0))

        began = time.time()
        runner = threading.Thread(target=job, daemon=True)
        runner.start()
        seen: list[int] = []  # distinct watermarks a reader saw while the job ran
        deadline = time.monotonic() + 40.0
        while len(seen) < 2 and time.monotonic() < deadline and runner.is_alive():
            state = store_state(plan.store_url)
            if state is not None and state.frames and (not seen or state.frames > seen[-1]):
                assert state.status == "running"
                seen.append(state.frames)
            time.sleep(0.1)
        running = ResultReader(plan.store_url)
        times = running.read_frames(0, running.num_frames).time_s
        stop.set()
        runner.join(30.0)
    assert len(seen) == 2, f"committed frames seen while running: {seen}"
    assert ResultReader(plan.store_url).spec.frames_per_shard == 4  # 1 s of 4 fps
    assert began <= times[0] <= times[-1] <= time.time()  # Unix seconds
    assert [o.state for o in outcome] == ["cancelled"], outcome
    assert isinstance(outcome[0], JobOutcome)
    assert store_state(plan.store_url).frames >= seen[-1]  # committed frames stay readable


def test_a_live_job_reconnects_as_its_spec_says_then_fails_in_one_line(
    ray_cluster: ModuleType, tmp_path: Path
) -> None:
    """``live.reconnects`` / ``live.backoff_s`` of the job spec reach its decode stage: with
    one attempt 0.2 s after the drop, the job fails within seconds, its frames kept."""
    with rtsp_server(fps=10) as server:
        spec = JobSpec.from_dict(
            {
                "source": server.url,
                "job_id": "live-drop",
                "output_root": str(tmp_path),
                "tasks": ["pose"],
                "sampling": {"target_fps": 4.0},
                "batch_size": 4,
                "live": {"reconnects": 1, "backoff_s": 0.2},
            }
        )
        plan = plan_job(spec)
        outcome: list[JobOutcome] = []
        runner = threading.Thread(
            target=lambda: outcome.append(run_on_ray(plan, stall_s=60.0)), daemon=True
        )
        runner.start()
        deadline = time.monotonic() + 40.0
        while time.monotonic() < deadline and runner.is_alive():
            state = store_state(plan.store_url)
            if state is not None and state.frames:
                break
            time.sleep(0.1)
        server.stop()
        stopped = time.monotonic()
        runner.join(40.0)
    assert [o.state for o in outcome] == ["failed"], outcome
    error = outcome[0].error or ""
    assert f"live stream {server.url!r} did not come back after 1 reconnect attempts" in error
    assert "\n" not in error
    assert time.monotonic() - stopped < 20.0  # the default (5 attempts from 1 s) takes 31 s
    assert store_state(plan.store_url).frames >= 4  # committed frames stay readable
