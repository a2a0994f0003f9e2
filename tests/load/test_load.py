"""50 small jobs submitted at once to one ``JobService``: all finish, fairly, in bounded memory.

The scenario is bench/load.py's (run once per module, shared by the tests below): a synthetic
64x48 clip of 8 frames (a bright rectangle moving over a dark background, written with PyAV),
the ``tiny`` model, the full-frame detector, batch size 4, ``max_jobs`` 4, one local Ray
cluster, the embedded Redis-compatible server (or ``SAPIENS_STREAM_TEST_REDIS_URL``). Its
figures (throughput, latency percentiles, memory) are printed as JSON.

On a 2-core machine the 50 jobs take 2 to 4 minutes (127 s idle, 222 s with other work on the
machine): every job starts three short-lived actor processes (decode, persons, writer), each
importing torch, and that start-up, not inference, bounds the throughput.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench.load import LoadScenario, make_clip, per_job, process_groups_rss, run_load, summarize
from storage import Coordinator, CoordinatorConfig, connect, open_result

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.timeout(1200)]

JOBS, MAX_JOBS, FRAMES = 20, 4, 8  # the first and last 10 jobs are apart; `make soak` runs 200
#: All jobs must be done within this (50 jobs took 127 s idle, 222-255 s busy, on 2 cores).
WALL_LIMIT_S = 600.0
MIB = 2**20


@pytest.fixture(scope="module")
def load(ray_cluster: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("load")
    url = os.environ.get("SAPIENS_STREAM_TEST_REDIS_URL")
    conn = connect(url, root=tmp / "root")
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    try:
        coord = Coordinator(conn.client, CoordinatorConfig(prefix=prefix))
        clip = make_clip(tmp / "clip.mp4", frames=FRAMES)
        scenario = LoadScenario(
            jobs=JOBS, max_jobs=MAX_JOBS, frames=FRAMES, batch_size=4, timeout_s=WALL_LIMIT_S
        )
        raw = run_load(coord, tmp / "out", clip, scenario)
        summary = summarize(raw)
        summary["ray_num_cpus"] = ray_cluster.cluster_resources().get("CPU")
        print("\nload:", json.dumps(summary, indent=2))
        yield {"raw": raw, "summary": summary, "jobs": per_job(raw), "coord": coord}
    finally:
        if url:
            keys = list(conn.client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                conn.client.delete(*keys)
        conn.close()


def test_every_job_succeeds_with_all_its_frames_in_time(load: dict[str, Any]) -> None:
    summary = load["summary"]
    assert summary["states"] == {"succeeded": JOBS}, summary["states"]
    for job in load["jobs"]:
        assert job["frames"] == FRAMES, job
        reader = open_result(load["raw"]["records"][job["job_id"]].result["store"])
        assert (reader.num_frames, reader.status) == (FRAMES, "complete"), job["job_id"]
    assert summary["wall_s"] <= WALL_LIMIT_S
    assert summary["frames"] == JOBS * FRAMES
    assert summary["sapiens_actors_created"] == 1  # one shared actor, never replaced


def test_jobs_start_in_submit_order_within_the_max_jobs_slack(load: dict[str, Any]) -> None:
    summary = load["summary"]
    assert summary["start_order_inversions_beyond_slack"] == 0
    assert summary["start_order_max_displacement"] <= MAX_JOBS


def test_no_job_waits_longer_than_fifo_would_make_it(load: dict[str, Any]) -> None:
    """Job i waits at most for the i // max_jobs rounds of jobs ahead of it, each taking at
    most the longest run (plus a little claim latency)."""
    jobs, run = load["jobs"], load["summary"]["run_s"]
    for i, job in enumerate(jobs):
        wait = job["started"] - job["submitted"]
        assert wait <= (i // MAX_JOBS) * run["max"] + 10.0, (job, run)
    assert load["summary"]["queue_wait_s"]["max"] <= (JOBS / MAX_JOBS) * run["max"]


def test_latency_percentiles_are_bounded(load: dict[str, Any]) -> None:
    latency, run = load["summary"]["latency_s"], load["summary"]["run_s"]
    # Submitted together and served first-come first-served, latencies spread evenly from
    # one run time to the whole span: p95 is about 1.8-2x the mean. A starved job shows.
    assert latency["p95"] <= 3.0 * latency["mean"], latency
    # Once started, no job runs much longer than the others (the Sapiens actor is shared).
    assert run["p95"] <= 3.0 * run["p50"] + 10.0, run


def test_memory_does_not_grow_between_the_first_and_the_last_jobs(load: dict[str, Any]) -> None:
    """Peak resident memory while the first 10 jobs finished vs while the last 10 did, per
    long-lived process group (this process, the Sapiens actor, Ray's GCS/raylet/agents, the
    Redis server) and in total (which also counts the per-job actor processes)."""
    memory = load["summary"]["memory_mib"]
    growth, first = memory["growth"], memory["first_jobs"]
    assert memory["samples"] >= 20
    limits = {"driver": 100.0, "sapiens": 256.0, "ray_core": 256.0, "redis": 64.0}
    for group, limit in limits.items():
        assert growth[group] <= limit, (group, memory)
    assert growth["total"] <= 0.2 * first["total"], memory


def test_no_actor_or_process_outlives_its_job(load: dict[str, Any]) -> None:
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert [n for n in names if n.startswith("sapiens-stream/")] == [], names
    stages = ("DecodePoolWorker", "PersonWorker", "WriterWorker", "SapiensWorker")
    deadline = time.monotonic() + 30
    while True:
        left = _stage_processes(stages)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == [], left
    assert process_groups_rss()["sapiens"] == 0


def _stage_processes(titles: tuple[str, ...]) -> list[str]:
    """Command lines of this process's descendants that run one of the stage actors."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if any(f"ray::{t}" in cmd for t in titles) and _descends_from(ppid, os.getpid()):
            found.append(cmd.strip())
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def test_the_synthetic_clip_decodes_to_the_frames_the_jobs_report(tmp_path: Path) -> None:
    import av

    clip = make_clip(tmp_path / "c.mp4", frames=FRAMES)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES and frames[0].shape == (48, 64, 3)
    assert frames[0].mean() < frames[0].max()  # a bright rectangle on a dark background
    assert not (frames[0] == frames[-1]).all()  # that moves
