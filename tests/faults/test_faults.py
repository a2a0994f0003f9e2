"""kill -9 of every kind of process a job depends on, mid-job: each job still finishes, and its
store equals a clean run's bit for bit (``_assert_same_store``): every sampled frame exactly
once, the same persons with the same track ids, the same keypoints and dense maps.

The persons move, leave and arrive (``moving_boxes``), so a resume that lost the tracker's
state would renumber them. A stage is killed together with the writer, both while the writer
is frozen inside a commit (``tests/faults/_commits.py``) after the first block and its resume
checkpoint were recorded, so every such resume starts from a checkpoint and meets a block that
is on disk (in part, or whole up to its marker) but not covered by the watermark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flows.plan import plan_job
from flows.run import run_on_ray
from flows.service import JobService
from flows.spec import JobSpec
from storage import TERMINAL_STATES, Coordinator, CoordinatorConfig, connect, open_result
from tests.faults._commits import trap_stage
from tests.faults._serve import TTL_S
from tests.integration.pipeline.test_run import (
    _assert_same_store,
    assert_restart_changes_ids,
    moving_boxes,
)

pytestmark = [pytest.mark.ray, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
STRIDE = 12  # 29 frames: blocks of 8 commit at watermarks 8, 16, 24 and 29
CUT_AT = (8, 16)  # commits cut: a checkpoint is saved, and whole blocks remain to be done


def _spec(clip: Path, root: Path, job_id: str, placement: str = "fused") -> JobSpec:
    return JobSpec.from_dict(
        {
            "source": str(clip),
            "job_id": job_id,
            "output_root": str(root),
            "detector": "boxes",
            "boxes": moving_boxes(STRIDE),
            "sampling": {"stride": STRIDE},
            "max_side": 160,
            "batch_size": 4,
            "placement": placement,
        }
    )


@pytest.fixture(scope="module")
def clean_runs(
    ray_cluster, shared_clip: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Stores of undisturbed runs, per placement, made on first use."""
    runs: dict[str, str] = {}

    def get(placement: str) -> str:
        if placement not in runs:
            root = tmp_path_factory.mktemp(f"clean-{placement}")
            out = run_on_ray(plan_job(_spec(shared_clip, root, "clean", placement)))
            assert out.state == "succeeded", out.error
            runs[placement] = out.store_url
        return runs[placement]

    return get  # type: ignore[return-value]


@pytest.fixture(scope="module")
def clean(clean_runs) -> str:
    """The store of an undisturbed fused run."""
    return clean_runs("fused")


CUTS = {  # where in a commit the writer dies; the watermark never covers the block yet
    "torn": lambda cut: cut.inside_commit,  # any of the block's files are on disk
    "unrecorded": lambda cut: cut.unrecorded,  # its marker is, and nothing is mid-write
}


@pytest.mark.parametrize(
    ("stage", "placement", "cut_at"),
    [
        # CI kills the writer inside a commit here, and a shared Sapiens actor, a service and
        # Redis below; `make soak` (the slow marker) kills every other stage too.
        pytest.param("decode", "fused", "torn", marks=pytest.mark.slow),
        pytest.param("persons", "fused", "torn", marks=pytest.mark.slow),
        pytest.param("infer", "fused", "torn", marks=pytest.mark.slow),
        ("writer", "fused", "torn"),
        pytest.param("writer", "fused", "unrecorded", marks=pytest.mark.slow),
        pytest.param("backbone", "split", "torn", marks=pytest.mark.slow),
        pytest.param("head-pose", "split", "torn", marks=pytest.mark.slow),
        pytest.param("post", "split", "torn", marks=pytest.mark.slow),
    ],
)
def test_killing_a_stage_process_mid_job_still_gives_the_clean_store(
    ray_cluster,
    clean_runs,
    shared_clip: Path,
    tmp_path: Path,
    stage: str,
    placement: str,
    cut_at: str,
) -> None:
    job_id = f"kill-{stage}-{cut_at}"
    boxes = moving_boxes(STRIDE)
    assert_restart_changes_ids(boxes, range(CUT_AT[0], len(boxes)))
    plan = plan_job(_spec(shared_clip, tmp_path, job_id, placement))
    trap = trap_stage(ray_cluster, job_id, stage, plan.store_url, CUT_AT, CUTS[cut_at])
    out = run_on_ray(plan)
    cut = trap.join()
    assert cut is not None and CUTS[cut_at](cut), f"no kill inside a commit ({cut_at}): {cut}"
    assert cut.checkpoint_frames >= CUT_AT[0], cut
    assert out.state == "succeeded", out.error
    assert open_result(out.store_url).attrs["timings"]["attempts"] == 2
    _assert_same_store(out.store_url, clean_runs(placement))


def _wait(coord: Coordinator, job_id: str, until: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not until(record := coord.get(job_id)):
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    return record


@contextmanager
def _serving(coord: Coordinator, worker_id: str, max_jobs: int = 1) -> Iterator[JobService]:
    stop = threading.Event()
    service = JobService(coord, worker_id=worker_id, max_jobs=max_jobs, device="cpu")
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(timeout=60)


def test_killing_the_serve_process_mid_job_lets_another_finish_it(
    ray_cluster, clean: str, redis_process, shared_clip: Path, tmp_path: Path
) -> None:
    config = CoordinatorConfig(heartbeat_ttl_s=TTL_S)
    coord = Coordinator(connect(redis_process.url).client, config)
    spec = _spec(shared_clip, tmp_path, "serve-killed")
    coord.submit(spec.to_dict(), job_id=spec.job_id)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.faults._serve", redis_process.url, "serve-first"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(coord, spec.job_id, lambda r: r.committed_frames >= 8, timeout=180)
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the whole service, mid-job
        first.wait(timeout=30)
    assert coord.get(spec.job_id).state == "running"  # nobody recorded anything
    with _serving(coord, "serve-second"):
        record = _wait(coord, spec.job_id, lambda r: r.state in TERMINAL_STATES, timeout=240)
    assert record.state == "succeeded", record.error
    assert record.attempts == 2 and record.owner == "serve-second"
    _assert_same_store(plan_job(spec).store_url, clean)


def test_killing_redis_mid_job_loses_nothing(
    ray_cluster, clean: str, redis_process, shared_clip: Path, tmp_path: Path
) -> None:
    coord = Coordinator(connect(redis_process.url).client)
    spec = _spec(shared_clip, tmp_path, "redis-killed")
    coord.submit(spec.to_dict(), job_id=spec.job_id)
    with _serving(coord, "serve-redis"):
        _wait(coord, spec.job_id, lambda r: r.committed_frames >= 8, timeout=180)
        redis_process.kill()
        time.sleep(2.0)  # the job goes on without Redis meanwhile
        redis_process.start()  # same port, same append-only file
        record = _wait(coord, spec.job_id, lambda r: r.state in TERMINAL_STATES, timeout=240)
    assert record.state == "succeeded", record.error
    assert record.attempts == 1  # the service rode out the outage: no redelivery
    assert record.committed_frames == open_result(plan_job(spec).store_url).num_frames
    _assert_same_store(plan_job(spec).store_url, clean)


def test_killing_a_shared_sapiens_actor_of_serve_mid_job(
    ray_cluster, clean: str, redis_process, shared_clip: Path, tmp_path: Path
) -> None:
    coord = Coordinator(connect(redis_process.url).client)
    spec = _spec(shared_clip, tmp_path, "pool-killed")
    coord.submit(spec.to_dict(), job_id=spec.job_id)
    with _serving(coord, "serve-pool") as service:
        _wait(coord, spec.job_id, lambda r: r.committed_frames >= 8, timeout=180)
        (name,) = [n for n in ray_cluster.util.list_named_actors() if "/infer/" in n]
        actor = ray_cluster.get_actor(name)
        os.kill(ray_cluster.get(actor.__ray_call__.remote(lambda self: os.getpid())), 9)
        record = _wait(coord, spec.job_id, lambda r: r.state in TERMINAL_STATES, timeout=240)
        assert service.pool.created == 2  # the dead member was replaced
    assert record.state == "succeeded", record.error
    _assert_same_store(plan_job(spec).store_url, clean)


@pytest.mark.parametrize(
    "stage",
    [
        pytest.param("decode", marks=pytest.mark.slow),
        pytest.param("persons", marks=pytest.mark.slow),
        "writer",
    ],
)
def test_killing_a_pooled_stage_actor_that_serves_several_jobs(
    ray_cluster, clean: str, redis_process, shared_clip: Path, tmp_path: Path, stage: str
) -> None:
    """Two jobs share one pooled member of ``stage``; it is killed mid-run. Each job resumes
    from its committed state on a new member and its store equals a clean run's."""
    coord = Coordinator(connect(redis_process.url).client)
    specs = [_spec(shared_clip, tmp_path, f"pooled-{stage}-{i}") for i in range(2)]
    for spec in specs:
        coord.submit(spec.to_dict(), job_id=spec.job_id)
    with _serving(coord, f"serve-{stage}", max_jobs=2) as service:
        _wait(coord, specs[0].job_id, lambda r: r.committed_frames >= 8, timeout=180)
        (name,) = [
            n
            for n in ray_cluster.util.list_named_actors()
            if n.startswith(f"sapiens-stream/pool/{stage}/")
        ]
        actor = ray_cluster.get_actor(name)
        os.kill(ray_cluster.get(actor.__ray_call__.remote(lambda self: os.getpid())), 9)
        records = [
            _wait(coord, s.job_id, lambda r: r.state in TERMINAL_STATES, timeout=240) for s in specs
        ]
        assert service.stages.created[stage] == 2  # the dead member was replaced, once
    attempts = []
    for spec, record in zip(specs, records, strict=True):
        assert record.state == "succeeded", record.error
        assert record.attempts == 1  # no job was handed back to the queue
        store = plan_job(spec).store_url
        attempts.append(open_result(store).attrs["timings"]["attempts"])
        _assert_same_store(store, clean)
    assert 2 in attempts, attempts  # a job had work in flight on the killed member
