"""Coordination conformance suite, run on every available server.

* the embedded Valkey (always);
* a private Debian redis-server 7.0 (when installed);
* the system Redis given by SAPIENS_STREAM_TEST_REDIS_URL (when set).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
import redis
from servers import EmbeddedValkey, LocalRedis7, SystemRedis
from storage_procs import delete_prefix

from storage import (
    Coordinator,
    CoordinatorConfig,
    HeartbeatThread,
    InvalidJobIdError,
    InvalidTransitionError,
    InvalidValueError,
    JobNotFoundError,
    LeaseLostError,
)

pytestmark = pytest.mark.redis


class CoordinationSuite:
    """Behaviour every Redis-compatible server must show; subclasses provide ``url``."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def client(self, url: str, prefix: str) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(url)
        try:
            yield client
        finally:
            delete_prefix(client, prefix)
            client.close()

    def coord(self, client: redis.Redis, prefix: str, **config: object) -> Coordinator:
        return Coordinator(client, CoordinatorConfig(prefix=prefix, **config))  # type: ignore[arg-type]

    def test_submit_is_idempotent_per_client_key(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        first = c.submit({"video": "a.mp4"}, client_key="req-1")
        again = c.submit({"video": "other.mp4"}, client_key="req-1")
        other = c.submit({"video": "a.mp4"}, client_key="req-2")
        assert (first.created, again.created, again.job_id) == (True, False, first.job_id)
        assert other.job_id != first.job_id
        assert c.get(first.job_id).spec == {"video": "a.mp4"}
        assert c.get(first.job_id).meta["client_key"] == "req-1"
        assert c.queue_length() == 2
        ttl = client.pttl(c.keys.idempotency("req-1"))
        assert 0 < ttl <= c.config.idempotency_ttl_s * 1000

    def test_explicit_ids_and_bad_input(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        assert c.submit({}, job_id="job-1").job_id == "job-1"
        with pytest.raises(InvalidValueError, match="'job-1' is already used"):
            c.submit({}, job_id="job-1")
        for bad in ("../x", "a:b", "", "x" * 65):
            with pytest.raises(InvalidJobIdError):
                c.submit({}, job_id=bad)
            with pytest.raises(InvalidJobIdError):
                c.get(bad)
        with pytest.raises(InvalidValueError, match="cannot be stored as msgpack"):
            c.submit({"when": object()})
        with pytest.raises(InvalidValueError, match="spec must be a mapping, got list"):
            c.submit([1, 2])  # type: ignore[arg-type]
        with pytest.raises(JobNotFoundError, match="'nope' does not exist") as e:
            c.get("nope")
        assert isinstance(e.value, KeyError)

    def test_malformed_stored_values(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        job = c.submit({"a": 1}).job_id
        client.hset(c.keys.job(job), "spec", b"\xc1not msgpack")
        with pytest.raises(InvalidValueError, match=f"job '{job}' field 'spec' is not valid"):
            c.get(job)
        client.hset(c.keys.job(job), "spec", b"\x80")
        client.hset(c.keys.job(job), "attempts", b"many")
        with pytest.raises(InvalidValueError, match="'attempts' must be an integer, got 'many'"):
            c.get(job)

    def test_job_lifecycle(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        job = c.submit({"video": "a.mp4"}).job_id
        lease = c.claim("w1")
        assert lease is not None
        assert (lease.job_id, lease.attempt, lease.spec) == (job, 1, {"video": "a.mp4"})
        assert c.claim("w2") is None
        assert c.progress(lease, committed_frames=8, counters={"frames": 8}) is False
        c.progress(lease, committed_frames=16, counters={"frames": 8, "persons": 3})
        rec = c.get(job)
        assert (rec.state, rec.owner, rec.committed_frames) == ("running", "w1", 16)
        assert rec.counters == {"frames": 16, "persons": 3}
        c.complete(lease, result={"frames": 16})
        rec = c.get(job)
        assert (rec.state, rec.result, rec.finished) == ("succeeded", {"frames": 16}, True)
        assert [e.type for e in c.events(job)] == [
            "submitted", "started", "progress", "progress", "succeeded"
        ]  # fmt: skip
        assert c.queue_length() == 0  # acked and deleted
        assert 0 < client.pttl(c.keys.job(job)) <= c.config.finished_ttl_s * 1000
        assert client.pttl(c.keys.events(job)) > 0
        with pytest.raises(InvalidTransitionError, match="is 'succeeded', expected 'running'"):
            c.progress(lease, committed_frames=17)

    def test_failure_keeps_the_reason(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        job = c.submit({}).job_id
        lease = c.claim("w1")
        assert lease is not None
        c.fail(lease, "decoder crashed", {"frame": 12})
        rec = c.get(job)
        assert rec.state == "failed"
        assert rec.error == {"kind": "error", "reason": "decoder crashed", "frame": 12}

    def test_cancel(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        queued = c.submit({}).job_id
        assert c.cancel(queued) == "cancelled"
        assert c.cancel(queued) == "cancelled"  # idempotent
        assert c.claim("w1") is None  # never delivered
        running = c.submit({}).job_id
        lease = c.claim("w1")
        assert lease is not None and lease.job_id == running
        assert c.cancel(running) == "running"
        assert c.progress(lease, committed_frames=4) is True
        c.confirm_cancel(lease)
        assert c.get(running).state == "cancelled"
        done = c.submit({}).job_id
        lease = c.claim("w1")
        assert lease is not None
        c.complete(lease)
        with pytest.raises(InvalidTransitionError, match="already succeeded"):
            c.cancel(done)
        with pytest.raises(JobNotFoundError):
            c.cancel("missing")

    def test_dead_worker_job_is_reclaimed_and_old_owner_fenced(
        self, client: redis.Redis, prefix: str
    ) -> None:
        c = self.coord(client, prefix, heartbeat_ttl_s=0.3)
        job = c.submit({}).job_id
        old = c.claim("w1")
        assert old is not None
        assert c.claim("w2") is None  # w1's entry is not idle long enough yet
        time.sleep(0.4)
        new = c.claim("w2")
        assert new is not None
        assert (new.job_id, new.attempt) == (job, 2)
        assert new.token > old.token
        assert c.heartbeat("w1", [old]) == [job]  # w1 learns it lost the job
        with pytest.raises(LeaseLostError, match="owner is now 'w2'"):
            c.progress(old, committed_frames=8)
        with pytest.raises(LeaseLostError):
            c.complete(old)
        c.complete(new, result={"by": "w2"})
        rec = c.get(job)
        assert (rec.state, rec.result, rec.attempts) == ("succeeded", {"by": "w2"}, 2)
        assert [e.type for e in c.events(job)].count("succeeded") == 1
        assert "reclaimed" in [e.type for e in c.events(job)]

    def test_heartbeat_keeps_the_lease(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix, heartbeat_ttl_s=0.4)
        c.submit({})
        lease = c.claim("w1")
        assert lease is not None
        for _ in range(8):
            assert c.heartbeat("w1", [lease]) == []
            assert c.claim("w2") is None
            time.sleep(0.1)
        assert c.worker_alive("w1")
        time.sleep(0.5)
        assert not c.worker_alive("w1")
        assert c.claim("w2") is not None

    def test_heartbeat_thread(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix, heartbeat_ttl_s=0.3)
        job = c.submit({}).job_id
        with HeartbeatThread(c, "w1", interval_s=0.05) as hb:
            lease = c.claim("w1")
            assert lease is not None
            hb.hold(lease)
            time.sleep(0.5)
            assert c.claim("w2") is None  # kept alive past the TTL
        time.sleep(0.35)
        assert c.claim("w2") is not None  # the thread stopped: taken over
        again = HeartbeatThread(c, "w1", interval_s=0.05)
        again.hold(lease)
        again.beat()
        assert again.lost(job)
        with pytest.raises(ValueError, match="interval_s must be in"):
            HeartbeatThread(c, "w1", interval_s=1.0)

    def test_dead_letter_after_max_deliveries(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix, heartbeat_ttl_s=0.2, max_deliveries=2)
        job = c.submit({}).job_id
        assert c.claim("w1") is not None
        time.sleep(0.25)
        assert c.claim("w2") is not None
        time.sleep(0.25)
        assert c.claim("w3") is None
        rec = c.get(job)
        assert rec.state == "failed"
        assert rec.error is not None and rec.error["kind"] == "dead_letter"
        assert "delivered 3 times (max_deliveries=2)" in rec.error["reason"]
        assert "w2" in rec.error["reason"]
        assert c.queue_length() == 0

    def test_event_stream_is_bounded(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix, events_maxlen=10)
        job = c.submit({}).job_id
        lease = c.claim("w1")
        assert lease is not None
        for i in range(400):
            c.progress(lease, committed_frames=i)
        length = client.xlen(c.keys.events(job))
        assert 10 <= length <= 10 + 100  # approximate trimming works in whole stream nodes
        assert c.events(job, count=1000)[-1].data["committed_frames"] == 399

    def test_listing_by_state_and_time(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        ids = []
        for _ in range(3):
            ids.append(c.submit({}).job_id)
            time.sleep(0.005)
        lease = c.claim("w1")
        assert lease is not None and lease.job_id == ids[0]
        assert [r.job_id for r in c.list_jobs()] == ids[::-1]
        assert [r.job_id for r in c.list_jobs(state="queued")] == ids[:0:-1]
        assert [r.job_id for r in c.list_jobs(state="running")] == [ids[0]]
        created = [c.get(i).created_ms for i in ids]
        assert [r.job_id for r in c.list_jobs(since_ms=created[1])] == ids[:0:-1]
        assert [r.job_id for r in c.list_jobs(until_ms=created[1])] == ids[1::-1]
        assert len(c.list_jobs(limit=1)) == 1

    def test_finished_jobs_expire_and_leave_the_listing(
        self, client: redis.Redis, prefix: str
    ) -> None:
        c = self.coord(client, prefix, finished_ttl_s=0.1)
        job = c.submit({}).job_id
        lease = c.claim("w1")
        assert lease is not None
        c.complete(lease)
        time.sleep(0.2)
        with pytest.raises(JobNotFoundError):
            c.get(job)
        assert c.list_jobs() == []
        assert client.zcard(c.keys.all_jobs) == 0  # pruned lazily

    def test_every_key_has_the_prefix(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        c.submit({}, client_key="k")
        lease = c.claim("w1")
        assert lease is not None
        c.heartbeat("w1", [lease])
        keys = {k.decode() for k in client.scan_iter(match=f"{prefix}:*")}
        assert len(keys) >= 8
        assert all(k.startswith(f"{prefix}:v1:") for k in keys)

    def test_claims_go_on_after_the_server_lost_its_data(
        self, client: redis.Redis, prefix: str
    ) -> None:
        """Every key gone, as after FLUSHALL or a failover to an empty replica: the
        coordinator that cached its consumer group claims again, the heartbeat reports the
        lease lost instead of raising, and no fencing token is issued twice."""
        c = self.coord(client, prefix)
        c.submit({"n": 1}, job_id="before")
        old = c.claim("w1")
        assert old is not None
        delete_prefix(client, prefix)
        assert c.heartbeat("w1", [old]) == ["before"]
        assert c.worker_alive("w1")  # registered again
        c.submit({"n": 2}, job_id="after")
        new = c.claim("w1")
        assert new is not None and new.job_id == "after"
        assert new.token > old.token

    def test_tokens_grow_across_data_losses_in_quick_succession(
        self, client: redis.Redis, prefix: str
    ) -> None:
        """Losses of every key one right after another (many within one millisecond): each
        token issued afterwards is still above every earlier one."""
        c = self.coord(client, prefix)
        tokens = []
        for i in range(30):
            c.submit({"n": i}, job_id=f"job{i}")
            lease = c.claim("w1")
            assert lease is not None
            tokens.append(lease.token)
            delete_prefix(client, prefix)
        assert all(b > a for a, b in itertools.pairwise(tokens)), tokens

    def test_claim_recreates_a_vanished_group(self, client: redis.Redis, prefix: str) -> None:
        c = self.coord(client, prefix)
        assert c.claim("w1") is None  # the group exists and is cached from here on
        client.xgroup_destroy(c.keys.queue, c.config.group)
        c.submit({}, job_id="j1")
        lease = c.claim("w1")
        assert lease is not None and lease.job_id == "j1"

    def test_direct_jobs_are_never_claimed_from_the_queue(
        self, client: redis.Redis, prefix: str
    ) -> None:
        """``run`` starts its own job outside the queue: a service claims only queued jobs."""
        c = self.coord(client, prefix, heartbeat_ttl_s=0.5)
        c.submit({"who": "queue"}, job_id="queued-job")
        lease = c.start_direct({"who": "run"}, job_id="own-job", worker_id="run-1")
        assert not isinstance(lease, tuple)
        assert (lease.job_id, lease.msg_id, c.get("own-job").state) == ("own-job", "", "running")
        other = c.claim("serve-1")
        assert other is not None and other.job_id == "queued-job"
        assert c.claim("serve-1") is None
        # A live owner keeps it; the same start elsewhere is refused.
        assert c.heartbeat("run-1", [lease]) == []
        assert c.start_direct({}, job_id="own-job", worker_id="run-2") == ("busy", "run-1")
        assert c.start_direct({}, job_id="queued-job", worker_id="run-2")[0] == "queued"
        # Its owner stops heartbeating: another run takes it over, and the old lease is fenced.
        time.sleep(0.7)
        again = c.start_direct({}, job_id="own-job", worker_id="run-2")
        assert not isinstance(again, tuple)
        assert again.token > lease.token and again.attempt == 2
        assert c.heartbeat("run-1", [lease]) == ["own-job"]
        with pytest.raises(LeaseLostError):
            c.progress(lease, committed_frames=1)
        c.complete(again, result={"frames": 1})
        assert c.start_direct({}, job_id="own-job", worker_id="run-3") == ("done", "succeeded")
        assert c.get("own-job").result == {"frames": 1}


class TestEmbeddedValkey(EmbeddedValkey, CoordinationSuite):
    pass


class TestLocalRedis7(LocalRedis7, CoordinationSuite):
    pass


class TestSystemRedis(SystemRedis, CoordinationSuite):
    pass
