"""Retry conformance suite: a failed or cancelled job queued again (``Coordinator.retry``), on
every available server (as test_storage_priority.py: the embedded Valkey, a private
redis-server 7.0 when installed, the system Redis given by SAPIENS_STREAM_TEST_REDIS_URL)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from servers import EmbeddedValkey, LocalRedis7, QueueSuite, SystemRedis

from storage import (
    Coordinator,
    EmbeddedServer,
    InvalidTransitionError,
    JobNotFoundError,
)

pytestmark = pytest.mark.redis


class RetrySuite(QueueSuite):
    """What a retry does on every Redis-compatible server."""

    def _failed(self, coord: Coordinator, job_id: str, priority: int = 0) -> None:
        coord.submit({"v": job_id}, job_id=job_id, priority=priority)
        lease = coord.claim("w1")
        assert lease is not None and lease.job_id == job_id
        coord.progress(lease, committed_frames=16, counters={"decoded_frames": 20})
        coord.fail(lease, "the source dropped")

    def test_a_failed_job_waits_again_and_its_next_delivery_is_a_retry(
        self, coord: Coordinator
    ) -> None:
        self._failed(coord, "f")
        failed = coord.get("f")
        assert failed.state == "failed" and failed.error is not None
        assert coord.client.pttl(coord.keys.job("f")) > 0  # finished jobs expire
        assert coord.retry("f") == 1
        again = coord.get("f")
        assert (again.state, again.retries, again.attempts, again.error) == ("queued", 1, 0, None)
        assert again.spec == {"v": "f"}
        assert (again.committed_frames, again.counters) == (16, {"decoded_frames": 20})
        assert coord.client.pttl(coord.keys.job("f")) == -1  # a queued job never expires
        assert coord.client.pttl(coord.keys.events("f")) == -1
        assert [e.type for e in coord.events("f")][-1] == "requeued"
        lease = coord.claim("w2")
        assert lease is not None
        assert (lease.job_id, lease.attempt, lease.retries) == ("f", 1, 1)
        assert lease.token > failed.token
        coord.complete(lease, result={"frames": 32})
        assert coord.get("f").state == "succeeded"

    def test_a_retried_job_keeps_its_priority_behind_the_jobs_waiting_there(
        self, coord: Coordinator
    ) -> None:
        self._failed(coord, "hi", priority=5)
        for job_id, priority in (("lo", 0), ("hi-2", 5), ("lo-2", 0)):
            coord.submit({}, job_id=job_id, priority=priority)
        coord.retry("hi")
        order = []
        while (lease := coord.claim("w1")) is not None:
            order.append(lease.job_id)
        assert order == ["hi-2", "hi", "lo", "lo-2"]

    def test_a_cancelled_job_can_be_retried_and_a_second_retry_counts(
        self, coord: Coordinator
    ) -> None:
        coord.submit({}, job_id="c")
        assert coord.cancel("c") == "cancelled"
        assert coord.retry("c") == 1
        assert coord.cancel("c") == "cancelled"
        assert coord.retry("c") == 2
        lease = coord.claim("w1")
        assert lease is not None and (lease.job_id, lease.retries) == ("c", 2)
        assert not coord.get("c").cancel_requested

    def test_only_failed_or_cancelled_jobs_are_retried(self, coord: Coordinator) -> None:
        coord.submit({}, job_id="q")
        with pytest.raises(InvalidTransitionError, match="'q' is 'queued', expected 'failed or"):
            coord.retry("q")
        lease = coord.claim("w1")
        assert lease is not None
        with pytest.raises(InvalidTransitionError, match="is 'running'"):
            coord.retry("q")
        coord.complete(lease)
        with pytest.raises(InvalidTransitionError, match="is 'succeeded'"):
            coord.retry("q")
        with pytest.raises(JobNotFoundError, match="'nope' does not exist"):
            coord.retry("nope")
        assert coord.queue_length() == 0
        assert coord.claim("w1") is None  # nothing was queued by the refused retries

    def test_a_job_its_submitter_ran_is_not_queued(self, coord: Coordinator) -> None:
        lease = coord.start_direct({}, job_id="d", worker_id="runner")
        assert lease is not None
        coord.fail(lease, "bad input")
        with pytest.raises(InvalidTransitionError, match="run it again there"):
            coord.retry("d")
        assert coord.get("d").state == "failed"
        assert coord.queue_length() == 0


class TestEmbeddedValkey(EmbeddedValkey, RetrySuite):
    pass


class TestLocalRedis7(LocalRedis7, RetrySuite):
    pass


class TestSystemRedis(SystemRedis, RetrySuite):
    pass


def test_cli_retry_queues_failed_jobs_again_and_refuses_others(
    embedded_server: EmbeddedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retry JOB...`` and ``retry --all`` (the failed and cancelled ones); ``status`` shows
    each job's priority and retries."""
    import json

    from flows.cli import main

    tag = uuid.uuid4().hex[:8]
    common = ["--output-root", str(tmp_path), "--redis-url", embedded_server.url]
    client = redis.Redis.from_url(embedded_server.url)
    coord = Coordinator(client)
    failed, cancelled, waiting = f"f-{tag}", f"c-{tag}", f"w-{tag}"
    try:
        coord.submit({}, job_id=failed, priority=3)
        lease = coord.claim(f"w-{tag}")
        while lease is not None and lease.job_id != failed:  # other tests' leftovers
            lease = coord.claim(f"w-{tag}")
        assert lease is not None
        coord.fail(lease, "boom")
        coord.submit({}, job_id=cancelled)
        coord.cancel(cancelled)
        coord.submit({}, job_id=waiting)
        capsys.readouterr()
        assert main(["retry", failed, waiting, *common]) == 2
        out = capsys.readouterr()
        report = json.loads(out.out)
        assert report["requeued"] == [{"job_id": failed, "retry": 1}]
        assert [r["job_id"] for r in report["not_requeued"]] == [waiting]
        assert "is 'queued', expected 'failed or cancelled'" in out.err
        assert main(["retry", "--all", *common]) == 0
        report = json.loads(capsys.readouterr().out)
        assert {"job_id": cancelled, "retry": 1} in report["requeued"]
        assert main(["status", failed, *common]) == 0
        status = json.loads(capsys.readouterr().out)
        assert (status["state"], status["priority"], status["retries"]) == ("queued", 3, 1)
    finally:
        for job_id in (failed, cancelled, waiting):
            coord.cancel(job_id)
        client.close()
