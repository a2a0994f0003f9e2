"""The service never runs one job in two of its threads: a job its own claim loop takes back
(its heartbeats failed for longer than the TTL) stops its old run first. No Ray here: the run
itself is replaced by a recorder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.service import JobService
from storage import Coordinator, CoordinatorConfig, EmbeddedServer, JobLease

pytestmark = pytest.mark.redis


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    server = EmbeddedServer.ensure(tmp_path / "root")
    client = server.client()
    try:
        yield Coordinator(client, CoordinatorConfig(heartbeat_ttl_s=0.5))
    finally:
        client.close()
        server.stop()


def test_a_job_taken_back_by_its_own_service_never_runs_twice_at_once(
    coord: Coordinator,
) -> None:
    service = JobService(coord, worker_id="svc-1")
    running: list[int] = []  # tokens of the runs in progress
    overlaps: list[tuple[int, ...]] = []
    stops: dict[int, str | None] = {}
    release_first = threading.Event()

    def fake_run(lease: JobLease) -> None:
        running.append(lease.token)
        if len(running) > 1:
            overlaps.append(tuple(running))
        if not release_first.is_set():  # the first run: works until it sees it must stop
            deadline = time.monotonic() + 10
            while (reason := service._stop_reason(lease)) is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            stops[lease.token] = reason
            release_first.set()
        running.remove(lease.token)

    service._run_job = fake_run  # type: ignore[method-assign]
    coord.submit({"source": "a.mp4"}, job_id="j1")
    first = coord.claim("svc-1")
    assert first is not None
    service._start(first)
    time.sleep(0.7)  # no heartbeat: the entry idles past the TTL
    again = coord.claim("svc-1")  # the same service takes its own running job back
    assert again is not None and again.job_id == "j1" and again.token > first.token
    service._start(again)
    service._threads["j1"].join(timeout=20)
    assert stops == {first.token: "lease lost"}
    assert overlaps == []
    assert service._tokens == {}  # both runs released what they held
