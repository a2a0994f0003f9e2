"""submit + serve through the real embedded Redis-compatible server and a local Ray cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.plan import plan_job
from flows.run import run_on_ray
from flows.service import JobService
from flows.spec import JobSpec
from storage import TERMINAL_STATES, Coordinator, connect, open_result
from tests.integration.pipeline.test_run import _assert_same_store

pytestmark = [pytest.mark.ray, pytest.mark.redis]


@pytest.fixture
def coord(tmp_path: Path):
    conn = connect(None, root=tmp_path / "root")  # no URL here: the embedded server
    yield Coordinator(conn.client)
    conn.close()


def _spec(clip: Path, root: Path, job_id: str, stride: int, **more: object) -> JobSpec:
    return JobSpec.from_dict(
        {
            "source": str(clip),
            "job_id": job_id,
            "output_root": str(root),
            "sampling": {"stride": stride},
            "max_side": 160,
            "batch_size": 4,
            **more,
        }
    )


@contextmanager
def _serving(coord: Coordinator, **options: object) -> Iterator[JobService]:
    """A JobService consuming the queue in a background thread for the block's duration."""
    stop = threading.Event()
    service = JobService(coord, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(timeout=60)


def _wait(coord: Coordinator, job_ids: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while any(coord.get(j).state not in TERMINAL_STATES for j in job_ids):
        assert time.monotonic() < deadline, [coord.get(j).state for j in job_ids]
        time.sleep(0.2)


def test_submit_and_serve_match_run_and_jobs_do_not_interfere(
    ray_cluster, coord: Coordinator, shared_clip: Path, tmp_path: Path
) -> None:
    # Job b asks for other tasks and another dense mode: the pool is keyed by model alone, so
    # both still run on one shared Sapiens actor, and each gets what a job alone gets.
    other = {"tasks": ["seg", "pose"], "dense_mode": "frame"}
    with _serving(coord, max_jobs=2, worker_id="test-serve") as service:
        a, b = (
            _spec(shared_clip, tmp_path, "served-a", 40),
            _spec(shared_clip, tmp_path, "served-b", 60, **other),
        )
        for spec in (a, b):  # two jobs at once, on one shared Sapiens actor
            coord.submit(spec.to_dict(), job_id=spec.job_id)
        again = coord.submit(a.to_dict(), job_id="other", client_key="k1")
        assert coord.submit(a.to_dict(), client_key="k1").job_id == again.job_id
        _wait(coord, ["served-a", "served-b", again.job_id])
        # The service publishes its shared actor's load with its heartbeat (Redis).
        deadline = time.monotonic() + 40
        while (
            not (actors := coord.workers().get("test-serve", {}).get("actors"))
            or actors[0]["frames"] < 24
        ):
            assert time.monotonic() < deadline, coord.workers()
            time.sleep(0.5)
        (actor,) = actors
        assert actor["calls"] >= 6 and actor["forwards"] >= 1
        assert 0 < actor["busy_fraction"] <= 1 and 0 < actor["fill"] <= 1
    assert coord.get("served-a").state == "succeeded"
    assert coord.get("served-b").committed_frames == 6
    assert service.pool.created == 1
    direct = run_on_ray(plan_job(_spec(shared_clip, tmp_path / "direct", "served-a", 40)))
    _assert_same_store(plan_job(a).store_url, direct.store_url)
    alone = run_on_ray(plan_job(_spec(shared_clip, tmp_path / "direct", "served-b", 60, **other)))
    _assert_same_store(plan_job(b).store_url, alone.store_url)
    served_b = open_result(plan_job(b).store_url)
    assert served_b.num_frames == 6
    assert sorted(m.task for m in served_b.models) == ["backbone", "pose", "seg"]


def test_cancel_stops_a_running_job_within_seconds(
    ray_cluster, coord: Coordinator, shared_clip: Path, tmp_path: Path
) -> None:
    with _serving(coord, max_jobs=1, worker_id="test-cancel"):
        spec = _spec(shared_clip, tmp_path, "long", 1)  # all 341 frames: far longer than the test
        coord.submit(spec.to_dict(), job_id="long")
        deadline = time.monotonic() + 120
        while coord.get("long").committed_frames < 8:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        asked = time.monotonic()
        assert coord.cancel("long") == "running"
        _wait(coord, ["long"], timeout=30)
        assert coord.get("long").state == "cancelled"
        assert time.monotonic() - asked < 15
        assert coord.get("long").committed_frames < 341


def test_a_corrupt_input_fails_only_its_own_job_with_a_clear_status(
    ray_cluster, coord: Coordinator, shared_clip: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with _serving(coord, max_jobs=2, worker_id="test-bad"):
        coord.submit(_spec(bad, tmp_path, "bad", 1).to_dict(), job_id="bad")
        coord.submit(_spec(shared_clip, tmp_path, "good", 120).to_dict(), job_id="good")
        _wait(coord, ["bad", "good"])
    record = coord.get("bad")
    assert record.state == "failed"
    assert "clip.mp4" in str(record.error)
    assert coord.get("good").state == "succeeded"


def test_a_finished_job_frees_its_slot_at_once(
    ray_cluster, coord: Coordinator, shared_clip: Path, tmp_path: Path
) -> None:
    """With one slot and a long poll interval, the next queued job starts as soon as the
    running one ends (the job's thread wakes the claim loop), not at the next poll."""
    poll_ms = 10_000
    stop = threading.Event()
    service = JobService(coord, max_jobs=1, worker_id="test-slot")
    thread = threading.Thread(
        target=service.serve, kwargs={"until": stop.is_set, "poll_ms": poll_ms}, daemon=True
    )
    thread.start()
    try:
        for job_id in ("slot-a", "slot-b"):
            coord.submit(_spec(shared_clip, tmp_path, job_id, 60).to_dict(), job_id=job_id)
        _wait(coord, ["slot-a", "slot-b"])
    finally:
        stop.set()
        thread.join(timeout=60)
    first = {e.type: e.time_ms / 1000 for e in coord.events("slot-a")}
    second = {e.type: e.time_ms / 1000 for e in coord.events("slot-b")}
    assert coord.get("slot-b").state == "succeeded"
    gap = second["started"] - first["succeeded"]
    assert -0.5 < gap < poll_ms / 1000 / 4, gap
