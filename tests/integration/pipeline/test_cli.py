"""The `sapiens-stream` job commands as a user runs them: separate processes, embedded Redis."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import stop_embedded

pytestmark = [pytest.mark.ray, pytest.mark.redis]


@pytest.fixture(autouse=True)
def _stop_servers(tmp_path: Path) -> Iterator[None]:
    """Read-only commands leave a detached embedded server for later commands; stop them."""
    yield
    for root in (tmp_path, tmp_path / "results"):
        stop_embedded(root)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env.pop("SAPIENS_STREAM_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_run_query_status_render(shared_clip: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "results")
    # A job queued for a service on the same root: `run` must leave it alone.
    queued = _cli("submit", str(shared_clip), "--job-id", "other", "--output-root", root)
    assert queued.returncode == 0, queued.stderr[-2000:]
    run = _cli(
        "run",
        str(shared_clip),
        "--job-id",
        "cli",
        "--stride",
        "85",
        "--max-side",
        "160",
        "--output-root",
        root,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["state"] == "succeeded" and out["summary"]["frames"] == 5
    assert "5 committed" in run.stderr
    # Progress counts against the frames the probe expects: the AVI's header claims 682
    # frames (it holds 341), so 9 at this stride until the job ends with 5.
    assert re.search(r"committed; \d/9 frames", run.stderr), run.stderr
    store = f"{root}/cli.zarr"
    query = json.loads(_cli("query", store, "--frame", "2").stdout)
    assert query["frame"] == 2 and len(query["track_id"]) == 1
    status = _cli("status", "cli", "--output-root", root)  # `run` left no record: the store
    assert json.loads(status.stdout)["state"] == "succeeded"
    other = json.loads(_cli("status", "other", "--output-root", root).stdout)
    assert (other["state"], other["attempts"]) == ("queued", 0)
    assert not Path(root, "other.zarr").exists()
    render = _cli("render", store, "--out", str(tmp_path / "v.mp4"), "--height", "96")
    assert render.returncode == 0 and (tmp_path / "v.mp4").stat().st_size > 0


def test_bad_input_is_exit_code_2_with_one_line(tmp_path: Path) -> None:
    bad = _cli("run", "video.mp4", "--stride", "0", "--output-root", str(tmp_path))
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and "stride" in bad.stderr
    missing = _cli("status", "no-such-job", "--output-root", str(tmp_path))
    assert missing.returncode == 2 and "no-such-job" in missing.stderr


def test_read_commands_leave_no_server_behind(tmp_path: Path) -> None:
    """`list`, `status`, `workers` on a root with no server running start one to read the
    registry, and stop it when they exit."""
    root = str(tmp_path)
    for argv in (("list",), ("workers",), ("status", "nope")):
        out = _cli(*argv, "--output-root", root, timeout=60)
        assert out.returncode in (0, 2), out.stderr[-2000:]
        assert not stop_embedded(root), f"{argv[0]} left an embedded server running"


def _run_args(clip: Path, root: Path, job_id: str, stride: str) -> list[str]:
    return ["run", str(clip), "--job-id", job_id, "--stride", stride, "--max-side", "160",
            "--output-root", str(root)]  # fmt: skip


def test_run_needs_no_redis_and_refuses_a_second_runner(shared_clip: Path, tmp_path: Path) -> None:
    from storage import JobRunLock, open_result

    root = tmp_path / "solo"
    args = _run_args(shared_clip, root, "solo", "85")
    with JobRunLock(str(root / "solo.zarr")):  # another live `run` of the same job
        busy = _cli(*args, timeout=120)
    assert busy.returncode == 2, busy.stderr[-2000:]
    assert busy.stderr.strip().startswith("error:") and "another process" in busy.stderr
    ok = _cli(*args)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["summary"]["frames"] == 5
    assert not (root / ".redis").exists()  # no job registry was started for it
    finalized = open_result(str(root / "solo.zarr")).attrs["finalized_at"]
    again = _cli(*args)  # a finished job is reported as it is, not run again
    assert again.returncode == 0 and json.loads(again.stdout)["state"] == "succeeded"
    assert open_result(str(root / "solo.zarr")).attrs["finalized_at"] == finalized


def test_a_killed_run_resumes_when_run_again(shared_clip: Path, tmp_path: Path) -> None:
    import signal
    import time

    from storage import open_result, store_state

    root = tmp_path / "resumed"
    url = str(root / "resumed.zarr")
    args = _run_args(shared_clip, root, "resumed", "12")  # 29 frames, blocks of 8
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    first = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its Ray cluster dies with it
    )
    deadline = time.monotonic() + 180
    while (state := store_state(url)) is None or state.frames < 8:
        assert first.poll() is None and time.monotonic() < deadline, "no commit before the end"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    created = open_result(url).attrs["created_at"]
    assert store_state(url).status == "running"
    again = _cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    reader = open_result(url)
    assert reader.status == "complete" and reader.num_frames == 29
    assert reader.attrs["created_at"] == created  # resumed, not made again
