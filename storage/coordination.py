"""Job registry, work queue and heartbeats on Redis (or the embedded Valkey).

* Registry: one hash per job; states queued -> running -> succeeded | failed | cancelled.
  Every transition is one Lua script that checks the expected state and, for a worker, its
  fencing token (a counter incremented at every start), so a stale owner cannot act.
* Queue: submitted jobs wait in a sorted set, highest ``priority`` first and in submit order
  within a priority; a claim delivers the first one through a stream with a consumer group
  (one Lua script: taken from the set, appended and read), so delivery is at-least-once and
  a delivered job is a pending entry of its worker. Workers heartbeat, which
  also resets the idle time of the entries they hold; entries idle longer than the heartbeat
  TTL belong to dead workers and are taken over with XAUTOCLAIM. A job delivered more than
  ``max_deliveries`` times is dead-lettered: failed, with the reason.
* Idempotent submit (client key -> job id), cancel, retry of a failed or cancelled job,
  progress counters, a bounded event stream per job, TTLs on finished jobs, listing by time
  and state. Values are msgpack.

Example (needs a server; see tests/integration/storage)::

    coord = Coordinator(connect(None, root=out_dir).client)
    sub = coord.submit({"video": "a.mp4"}, client_key="req-1")   # same key -> same job id
    lease = coord.claim("worker-1")                              # None when the queue is empty
    coord.progress(lease, committed_frames=16, counters={"frames": 16})
    coord.complete(lease, result={"frames": 16})                 # fenced by lease.token
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from storage import _lua
from storage._keys import Keys, new_job_id, validate_id, validate_worker_id
from storage._values import pack, unpack
from storage.errors import (
    InvalidTransitionError,
    InvalidValueError,
    JobNotFoundError,
)
from storage.jobs import (
    CoordinatorConfig,
    JobEvent,
    JobLease,
    JobRecord,
    SubmitResult,
    check_priority,
    raise_for_reply,
)

__all__ = ["Coordinator"]

logger = logging.getLogger(__name__)

#: How often a blocking claim looks for a waiting job.
_POLL_S = 0.05


def _words(reply: Sequence[Any]) -> list[str]:
    # Undecodable bytes become U+FFFD, which no id accepts: callers then refuse them clearly.
    return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in reply]


def _entry_job(fields: Mapping[bytes, bytes]) -> str:
    """The job id a queue entry names; "" (an invalid id, dropped by ``claim``) when the entry
    has none or it is not text."""
    return fields.get(b"job", b"").decode(errors="replace")


class Coordinator:
    """Client and worker operations on the job registry and queue.

    Args:
        client: A redis-py client with ``decode_responses=False``.
        config: Key prefix, group name, TTLs and limits.
    """

    def __init__(self, client: redis.Redis, config: CoordinatorConfig | None = None) -> None:
        self.client = client
        self.config = config or CoordinatorConfig()
        self.keys = Keys(self.config.prefix)
        self._scripts = {
            name: client.register_script(getattr(_lua, name))
            for name in (
                "SUBMIT",
                "START",
                "START_DIRECT",
                "TRANSITION",
                "CANCEL",
                "PROGRESS",
                "HEARTBEAT",
                "DISPATCH",
                "RETRY",
            )
        }
        self._group_ready = False

    # -- helpers -----------------------------------------------------------------------------
    def _job_keys(self, job_id: str) -> list[str]:
        k = self.keys
        return [k.job(job_id), k.events(job_id), k.queue, k.fence, *k.state_keys()]

    def _ms(self, seconds: float) -> int:
        return max(1, round(seconds * 1000))

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.keys.queue, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    # -- client side -------------------------------------------------------------------------
    def submit(
        self,
        spec: Mapping[str, Any],
        *,
        client_key: str | None = None,
        job_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        priority: int = 0,
    ) -> SubmitResult:
        """Register a job and queue it; the same ``client_key`` always yields the same job.

        Args:
            spec: The job spec (msgpack-serialisable mapping).
            client_key: Idempotency key chosen by the client (any string <= 1024 chars).
            job_id: Explicit id; default: a new time-sortable id.
            meta: Extra facts to keep with the job (output URI, submitter, ...).
            priority: Higher is delivered first, one priority in submit order (an int in
                ``[PRIORITY_MIN, PRIORITY_MAX]``); a repeated submit changes nothing.

        Raises:
            InvalidJobIdError: If ``job_id`` or ``client_key`` is invalid.
            InvalidValueError: If ``spec`` or ``meta`` cannot be stored as msgpack, an
                explicit ``job_id`` is already taken by another submission, or ``priority``
                is not an int in range.
        """
        if not isinstance(spec, Mapping):
            msg = f"spec must be a mapping, got {type(spec).__name__}"
            raise InvalidValueError(msg)
        check_priority(priority)
        jid = validate_id(job_id) if job_id is not None else new_job_id()
        idem = self.keys.idempotency(client_key) if client_key is not None else self.keys.job(jid)
        full_meta = {**(meta or {}), "client_key": client_key}
        argv = [
            jid,
            pack(dict(spec)),
            pack(full_meta),
            self._ms(self.config.idempotency_ttl_s) if client_key is not None else 0,
            self.config.events_maxlen,
            pack({"client_key": client_key}),
            priority,
            -priority,
        ]
        k = self.keys
        keys = [*self._job_keys(jid), k.all_jobs, idem, k.waiting, k.queue_seq]
        reply = _words(self._scripts["SUBMIT"](keys=keys, args=argv))
        if reply[0] == "existing_id":
            raise InvalidValueError(f"job id {jid!r} is already used by another submission")
        created = reply[0] == "ok"
        logger.debug("submit %s created=%s", reply[1], created)
        return SubmitResult(job_id=validate_id(reply[1]), created=created)

    def get(self, job_id: str) -> JobRecord:
        """Return the job's record.

        Raises:
            JobNotFoundError: If the job does not exist (or expired).
            InvalidValueError: If the stored record is malformed.
        """
        raw = self.client.hgetall(self.keys.job(job_id))
        if not raw:
            msg = f"job {job_id!r} does not exist (never submitted, or expired)"
            raise JobNotFoundError(msg)
        return JobRecord.from_hash(job_id, raw)

    def cancel(self, job_id: str) -> str:
        """Cancel a job: queued jobs end at once, running ones are asked to stop.

        Returns:
            ``cancelled`` if the job is now cancelled, ``running`` if its worker was asked to
            stop (it confirms with :meth:`confirm_cancel`).

        Raises:
            JobNotFoundError: If the job does not exist.
            InvalidTransitionError: If the job already succeeded or failed.
        """
        argv = [
            job_id,
            self.config.events_maxlen,
            self._ms(self.config.finished_ttl_s),
            self.config.group,
            pack({"by": "client"}),
        ]
        keys = [*self._job_keys(job_id), self.keys.waiting]
        reply = _words(self._scripts["CANCEL"](keys=keys, args=argv))
        raise_for_reply(job_id, reply, "queued or running")
        if reply[0] == "terminal":
            if reply[1] == "cancelled":
                return "cancelled"
            msg = f"job {job_id!r} already {reply[1]}; it cannot be cancelled"
            raise InvalidTransitionError(msg)
        return reply[1]

    def retry(self, job_id: str, *, by: str = "client") -> int:
        """Queue a failed or cancelled job again; returns its retry number (1 for the first).

        It waits at its priority behind the jobs already waiting there. Its next delivery
        continues its store from the committed frames (:func:`storage.reopen_failed`).

        Raises:
            JobNotFoundError: If the job does not exist (or its record expired).
            InvalidTransitionError: If the job is queued, running or succeeded, or was run by
                its submitter (``start_direct``) rather than queued.
        """
        argv = [job_id, self.config.events_maxlen, pack({"by": by})]
        keys = [*self._job_keys(job_id), self.keys.waiting, self.keys.queue_seq]
        reply = _words(self._scripts["RETRY"](keys=keys, args=argv))
        if reply[0] == "direct":
            msg = (
                f"job {job_id!r} was run by its submitter (`sapiens-stream run`), not queued; "
                f"run it again there"
            )
            raise InvalidTransitionError(msg)
        raise_for_reply(job_id, reply, "failed or cancelled")
        logger.info("job %s (%s) queued again: retry %s", job_id, reply[1], reply[2])
        return int(reply[2])

    def list_jobs(
        self,
        *,
        state: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Return jobs newest first, optionally in one state and a time window.

        Times are creation times for ``state=None``, else the time the job entered the state.
        """
        index = self.keys.all_jobs if state is None else self.keys.state(state)
        ids = self.client.zrevrangebyscore(
            index,
            "+inf" if until_ms is None else until_ms,
            "-inf" if since_ms is None else since_ms,
            start=0,
            num=limit,
        )
        pipe = self.client.pipeline(transaction=False)
        for raw_id in ids:
            pipe.hgetall(self.keys.job(raw_id.decode()))
        records, gone = [], []
        for raw_id, raw in zip(ids, pipe.execute(), strict=True):
            job_id = raw_id.decode()
            if not raw:
                gone.append(raw_id)  # expired finished job: drop it from the index lazily
                continue
            rec = JobRecord.from_hash(job_id, raw)
            if state is None or rec.state == state:
                records.append(rec)
        if gone:
            self.client.zrem(index, *gone)
        return records

    def events(self, job_id: str, *, after: str = "-", count: int = 100) -> list[JobEvent]:
        """Return up to ``count`` events of the job after the stream id ``after``."""
        start = after if after == "-" else f"({after}"
        entries = self.client.xrange(self.keys.events(job_id), min=start, count=count)
        out = []
        for entry_id, fields in entries:
            where = f"event {entry_id!r} of {job_id!r}"
            try:
                kind, ts = fields[b"type"].decode("ascii"), int(fields[b"ts"])
            except (KeyError, ValueError) as e:  # UnicodeDecodeError is a ValueError
                raise InvalidValueError(f"{where}: malformed type or time ({e})") from e
            out.append(
                JobEvent(
                    id=entry_id.decode(),
                    type=kind,
                    time_ms=ts,
                    data=unpack(fields.get(b"data"), what=where),
                )
            )
        return out

    # -- worker side -------------------------------------------------------------------------
    def claim(self, worker_id: str, *, block_ms: int = 0) -> JobLease | None:
        """Take one job: first one of a dead worker (XAUTOCLAIM), else a new one.

        Args:
            worker_id: This worker's consumer name (unique per process).
            block_ms: How long to wait for a new job; 0 = do not wait.

        Returns:
            A lease, or None when no job is available.
        """
        validate_worker_id(worker_id)
        try:
            return self._claim(worker_id, block_ms)
        except redis.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # The server lost its data (FLUSHALL, failover to an empty replica): the group this
            # client saw is gone. Make it again and carry on.
            logger.warning("the queue's consumer group vanished; creating it again")
            self._group_ready = False
            return self._claim(worker_id, block_ms)

    def _claim(self, worker_id: str, block_ms: int) -> JobLease | None:
        self._ensure_group()
        for _ in range(100):  # bounded: each round consumes one queue entry
            entry = self._reclaim_one(worker_id) or self._read_new(worker_id, block_ms)
            if entry is None:
                return None
            lease = self._start(worker_id, *entry)
            if lease is not None:
                return lease
        return None

    def start_direct(
        self,
        spec: Mapping[str, Any],
        *,
        job_id: str,
        worker_id: str,
        meta: Mapping[str, Any] | None = None,
    ) -> JobLease | tuple[str, str]:
        """Register job ``job_id`` and start it for ``worker_id`` at once, outside the queue.

        For a submitter that runs its own job (``sapiens-stream run``): no service can claim
        it. The lease is kept by :meth:`heartbeat` like a queue lease; if its owner stops
        heartbeating, the same call (from any process) takes the job over with a new token.

        Returns:
            The lease, or ``(status, detail)`` when the job cannot be started here:
            ``("done", state)`` it already ended; ``("busy", owner)`` a live owner runs it;
            ``("queued", state)`` it was submitted to the queue, where a service runs it.
        """
        if not isinstance(spec, Mapping):
            msg = f"spec must be a mapping, got {type(spec).__name__}"
            raise InvalidValueError(msg)
        validate_id(job_id)
        validate_worker_id(worker_id)
        argv = [
            job_id,
            pack(dict(spec)),
            pack({**(meta or {}), "client_key": None}),
            worker_id,
            self._ms(self.config.heartbeat_ttl_s),
            self.config.events_maxlen,
            self._ms(self.config.finished_ttl_s),
            self.config.group,
        ]
        keys = [*self._job_keys(job_id), self.keys.all_jobs]
        reply = _words(self._scripts["START_DIRECT"](keys=keys, args=argv))
        if reply[0] != "started":
            return reply[0], reply[1]
        rec = self.get(job_id)
        return JobLease(
            job_id=job_id,
            worker_id=worker_id,
            token=int(reply[1]),
            msg_id="",
            attempt=int(reply[2]),
            spec=rec.spec,
            committed_frames=rec.committed_frames,
            retries=rec.retries,
        )

    def _reclaim_one(self, worker_id: str) -> tuple[str, str] | None:
        min_idle = self._ms(self.config.heartbeat_ttl_s)
        reply = self.client.xautoclaim(
            self.keys.queue, self.config.group, worker_id, min_idle, start_id="0-0", count=1
        )
        for msg_id, fields in reply[1]:
            if fields:
                return msg_id.decode(), _entry_job(fields)
        return None

    def _read_new(self, worker_id: str, block_ms: int) -> tuple[str, str] | None:
        """Deliver the next waiting job (priority order) to ``worker_id``, waiting up to
        ``block_ms`` for one (by polling: a sorted set has no blocking read that also appends
        to the stream atomically)."""
        deadline = time.monotonic() + block_ms / 1000
        keys, argv = [self.keys.queue, self.keys.waiting], [self.config.group, worker_id]
        while True:
            reply = self._scripts["DISPATCH"](keys=keys, args=argv)
            if reply:
                fields = dict(zip(reply[1::2], reply[2::2], strict=True))
                return reply[0].decode(), _entry_job(fields)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(_POLL_S, left))

    def _start(self, worker_id: str, msg_id: str, job_id: str) -> JobLease | None:
        try:
            validate_id(job_id)
        except ValueError:
            logger.warning("dropping queue entry %s with invalid job id %r", msg_id, job_id)
            self.client.xack(self.keys.queue, self.config.group, msg_id)
            self.client.xdel(self.keys.queue, msg_id)  # so queue_length() does not count it
            return None
        argv = [
            job_id,
            worker_id,
            self.config.group,
            msg_id,
            self.config.max_deliveries,
            self.config.events_maxlen,
            self._ms(self.config.finished_ttl_s),
        ]
        keys = [*self._job_keys(job_id), self.keys.waiting]
        reply = _words(self._scripts["START"](keys=keys, args=argv))
        if reply[0] != "started":
            logger.info("queue entry %s for job %s: %s", msg_id, job_id, " ".join(reply))
            return None
        try:
            rec = self.get(job_id)
        except InvalidValueError as e:  # a record no one can run: fail it, do not raise
            logger.warning("job %s has a malformed record: %s", job_id, e)
            broken = JobLease(
                job_id=job_id,
                worker_id=worker_id,
                token=int(reply[1]),
                msg_id=msg_id,
                attempt=int(reply[2]),
                spec={},
                committed_frames=0,
            )
            self.fail(broken, f"malformed job record: {e}")
            return None
        return JobLease(
            job_id=job_id,
            worker_id=worker_id,
            token=int(reply[1]),
            msg_id=msg_id,
            attempt=int(reply[2]),
            spec=rec.spec,
            committed_frames=rec.committed_frames,
            retries=rec.retries,
        )

    def heartbeat(
        self,
        worker_id: str,
        leases: Sequence[JobLease] = (),
        *,
        info: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Mark the worker alive for one TTL and keep its leases; return job ids it lost.

        Queue leases are kept through their pending entries, direct leases (``msg_id`` empty,
        see :meth:`start_direct`) through their job hashes. If the server lost its data, every
        lease is lost and the worker is registered again.
        """
        payload = pack({"pid": os.getpid(), "time": time.time(), **(info or {})})
        queued = [lease for lease in leases if lease.msg_id]
        direct = [lease for lease in leases if not lease.msg_id]
        argv = [
            self._ms(self.config.heartbeat_ttl_s),
            payload,
            self.config.group,
            worker_id,
            len(queued),
            *(lease.msg_id for lease in queued),
            *(lease.token for lease in direct),
        ]
        keys = [
            self.keys.worker(worker_id),
            self.keys.queue,
            *(self.keys.job(lease.job_id) for lease in direct),
        ]
        lost = set(_words(self._scripts["HEARTBEAT"](keys=keys, args=argv)))
        if queued and lost >= {lease.msg_id for lease in queued}:
            self._group_ready = False  # the group may be gone: make it again before a claim
        return [
            lease.job_id
            for lease in leases
            if (lease.msg_id or self.keys.job(lease.job_id)) in lost
        ]

    def workers(self) -> dict[str, dict[str, Any]]:
        """Live workers (heartbeat not expired) and the info their last heartbeat carried."""
        prefix = self.keys.worker("x")[:-1]
        out: dict[str, dict[str, Any]] = {}
        for key in self.client.scan_iter(match=f"{prefix}*", count=500):
            raw = self.client.get(key)
            if raw is None:
                continue  # expired between SCAN and GET
            worker_id = key.decode()[len(prefix) :]
            out[worker_id] = unpack(raw, what=f"heartbeat of worker {worker_id!r}")
        return out

    def worker_alive(self, worker_id: str) -> bool:
        """Whether the worker's heartbeat key exists (it has not expired)."""
        return bool(self.client.exists(self.keys.worker(worker_id)))

    def progress(
        self,
        lease: JobLease,
        *,
        committed_frames: int | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> bool:
        """Record progress (fenced); return whether a cancel was requested.

        Raises:
            LeaseLostError: If another worker now owns the job.
            InvalidTransitionError: If the job is no longer running.
        """
        flat: list[Any] = []
        for name, value in (counters or {}).items():
            validate_id(name, "counter name")
            flat += [name, int(value)]
        event = {"committed_frames": committed_frames, **(counters or {})}
        argv = [
            lease.token,
            self.config.events_maxlen,
            -1 if committed_frames is None else int(committed_frames),
            pack(event),
            *flat,
        ]
        keys = [self.keys.job(lease.job_id), self.keys.events(lease.job_id)]
        reply = _words(self._scripts["PROGRESS"](keys=keys, args=argv))
        raise_for_reply(lease.job_id, reply, "running")
        return reply[1] == "1"

    def _transition(
        self, lease: JobLease, new_state: str, field: str, value: Any, event: str
    ) -> None:
        argv = [
            lease.job_id,
            "running",
            lease.token,
            new_state,
            field,
            b"" if not field else pack(value),
            self.config.events_maxlen,
            self._ms(self.config.finished_ttl_s),
            self.config.group,
            event,
            pack({"worker": lease.worker_id, "token": lease.token}),
        ]
        reply = _words(self._scripts["TRANSITION"](keys=self._job_keys(lease.job_id), args=argv))
        raise_for_reply(lease.job_id, reply, "running")

    def complete(self, lease: JobLease, result: Any = None) -> None:
        """running -> succeeded (fenced); ``result`` is kept with the job."""
        self._transition(lease, "succeeded", "result", result, "succeeded")

    def fail(self, lease: JobLease, reason: str, details: Mapping[str, Any] | None = None) -> None:
        """running -> failed (fenced), keeping the reason."""
        error = {"kind": "error", "reason": reason, **(details or {})}
        self._transition(lease, "failed", "error", error, "failed")

    def confirm_cancel(self, lease: JobLease) -> None:
        """running -> cancelled (fenced), after the worker saw the cancel request."""
        self._transition(lease, "cancelled", "", None, "cancelled")

    def queue_length(self) -> int:
        """Jobs in the queue: waiting to be delivered plus delivered-but-unfinished."""
        pipe = self.client.pipeline(transaction=False)
        pipe.xlen(self.keys.queue)
        pipe.zcard(self.keys.waiting)
        return sum(int(n) for n in pipe.execute())
