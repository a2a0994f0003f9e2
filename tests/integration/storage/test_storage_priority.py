"""Queue priority conformance suite: higher priority first, submit order within a priority,
atomic delivery and idempotent submit, on every available server (as
test_storage_coordination.py: the embedded Valkey, a private redis-server 7.0 when installed,
the system Redis given by SAPIENS_STREAM_TEST_REDIS_URL)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from servers import EmbeddedValkey, LocalRedis7, QueueSuite, SystemRedis

from storage import Coordinator, EmbeddedServer, InvalidValueError

pytestmark = pytest.mark.redis


class PrioritySuite(QueueSuite):
    """Priority behaviour every Redis-compatible server must show."""

    def _claimed(self, c: Coordinator, n: int) -> list[str]:
        out = []
        for _ in range(n):
            lease = c.claim("w1")
            assert lease is not None
            out.append(lease.job_id)
        return out

    def test_higher_priority_first_then_submit_order(self, coord: Coordinator) -> None:
        for job_id, priority in (("a", 0), ("b", 0), ("c", 5), ("d", -3), ("e", 5), ("f", 0)):
            coord.submit({}, job_id=job_id, priority=priority)
        assert coord.queue_length() == 6
        assert self._claimed(coord, 2) == ["c", "e"]
        coord.submit({}, job_id="g", priority=1)  # arrives late, still ahead of the zeros
        assert self._claimed(coord, 4) == ["g", "a", "b", "f"]
        assert self._claimed(coord, 1) == ["d"]
        assert coord.claim("w1") is None
        assert (coord.get("c").priority, coord.get("d").priority) == (5, -3)
        assert coord.queue_length() == 7  # delivered, not finished

    def test_repeated_submit_keeps_the_first_priority(self, coord: Coordinator) -> None:
        first = coord.submit({"v": 1}, client_key="k", priority=1)
        coord.submit({}, job_id="mid", priority=2)
        again = coord.submit({"v": 2}, client_key="k", priority=9)
        assert (again.job_id, again.created) == (first.job_id, False)
        assert coord.queue_length() == 2
        assert self._claimed(coord, 2) == ["mid", first.job_id]
        assert coord.claim("w1") is None
        assert coord.get(first.job_id).priority == 1

    def test_cancelled_waiting_job_is_never_delivered(self, coord: Coordinator) -> None:
        coord.submit({}, job_id="hi", priority=9)
        coord.submit({}, job_id="lo")
        assert coord.cancel("hi") == "cancelled"
        assert coord.queue_length() == 1
        assert self._claimed(coord, 1) == ["lo"]
        assert coord.claim("w1") is None

    def test_concurrent_claims_deliver_each_job_once(self, coord: Coordinator) -> None:
        ids = [f"j{i:02d}" for i in range(24)]
        for i, job_id in enumerate(ids):
            coord.submit({}, job_id=job_id, priority=i % 3)
        got: list[str] = []
        lock = threading.Lock()

        def worker(name: str) -> None:
            while (lease := coord.claim(name)) is not None:
                with lock:
                    got.append(lease.job_id)

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(got) == ids  # every job once: none lost, none twice

    def test_a_blocking_claim_takes_a_job_submitted_while_it_waits(
        self, coord: Coordinator
    ) -> None:
        assert coord.claim("w1") is None  # makes the consumer group
        timer = threading.Timer(0.2, lambda: coord.submit({}, job_id="late", priority=3))
        timer.start()
        t0 = time.monotonic()
        lease = coord.claim("w1", block_ms=3000)
        timer.join()
        assert lease is not None and lease.job_id == "late"
        assert time.monotonic() - t0 < 1.0

    @pytest.mark.parametrize("bad", [True, 1.5, "3", 2**31, -(2**31) - 1])
    def test_priority_must_be_a_32_bit_int(self, coord: Coordinator, bad: object) -> None:
        with pytest.raises(InvalidValueError, match=r"priority: expected an int in \["):
            coord.submit({}, priority=bad)  # type: ignore[arg-type]
        assert coord.queue_length() == 0


class TestEmbeddedValkey(EmbeddedValkey, PrioritySuite):
    pass


class TestLocalRedis7(LocalRedis7, PrioritySuite):
    pass


class TestSystemRedis(SystemRedis, PrioritySuite):
    pass


def test_cli_submit_priority_reaches_the_queue(
    embedded_server: EmbeddedServer, tmp_path: Path
) -> None:
    """``submit --priority N`` queues the job at N: submitted later, it waits ahead."""
    from flows.cli import main

    tag = uuid.uuid4().hex[:8]
    ids = [f"lo-{tag}", f"hi-{tag}"]
    common = ["--output-root", str(tmp_path), "--redis-url", embedded_server.url]
    for job_id, priority in zip(ids, ("0", "7"), strict=True):
        argv = ["submit", "a.mp4", "--job-id", job_id, "--priority", priority, *common]
        assert main(argv) == 0
    assert main(["submit", "a.mp4", "--priority", "2147483648", *common]) == 2
    client = redis.Redis.from_url(embedded_server.url)
    coord = Coordinator(client)
    try:
        waiting = [m.decode().split(":", 1)[1] for m in client.zrange(coord.keys.waiting, 0, -1)]
        assert [j for j in waiting if j in ids] == ids[::-1]
        assert (coord.get(ids[0]).priority, coord.get(ids[1]).priority) == (0, 7)
    finally:
        for job_id in ids:
            coord.cancel(job_id)
        client.close()
