"""Job records, leases and events as read from Redis, with strict decoding.

A malformed hash (missing field, non-integer counter, bad msgpack) raises
:class:`~storage.errors.InvalidValueError` naming the job and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from storage._values import unpack, unpack_map
from storage.errors import (
    InvalidTransitionError,
    InvalidValueError,
    JobNotFoundError,
    LeaseLostError,
)

__all__ = [
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TERMINAL_STATES",
    "CoordinatorConfig",
    "JobEvent",
    "JobLease",
    "JobRecord",
    "JobState",
    "SubmitResult",
    "check_priority",
    "raise_for_reply",
]

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES: Final = frozenset({"succeeded", "failed", "cancelled"})
_STATES: Final = ("queued", "running", "succeeded", "failed", "cancelled")
#: Range of a job's queue priority (a 32-bit int; higher is delivered first).
PRIORITY_MIN: Final = -(2**31)
PRIORITY_MAX: Final = 2**31 - 1


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is an int in ``[PRIORITY_MIN, PRIORITY_MAX]``.

    Raises:
        InvalidValueError: Otherwise (bools are not priorities).
    """
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not PRIORITY_MIN <= priority <= PRIORITY_MAX
    ):
        msg = f"priority: expected an int in [{PRIORITY_MIN}, {PRIORITY_MAX}], got {priority!r}"
        raise InvalidValueError(msg)
    return priority


def _field_text(raw: Mapping[bytes, bytes], where: str, name: str) -> str:
    value = raw.get(name.encode())
    if value is None:
        msg = f"{where}: field {name!r} is missing"
        raise InvalidValueError(msg)
    try:
        return value.decode("ascii")
    except UnicodeDecodeError as e:
        msg = f"{where}: field {name!r} is not ASCII: {value[:40]!r}"
        raise InvalidValueError(msg) from e


def _field_int(raw: Mapping[bytes, bytes], where: str, name: str) -> int:
    value = _field_text(raw, where, name)
    try:
        return int(value)
    except ValueError as e:
        msg = f"{where}: field {name!r} must be an integer, got {value!r}"
        raise InvalidValueError(msg) from e


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorConfig:
    """Tunables of the job registry and queue.

    Attributes:
        prefix: Prefix of every Redis key.
        group: Consumer group of the work queue.
        max_deliveries: Deliveries after which a job is dead-lettered as failed.
        heartbeat_ttl_s: A worker silent this long is dead; its jobs are reclaimed.
        finished_ttl_s: How long finished jobs (hash and events) are kept.
        idempotency_ttl_s: How long a client key maps to its job id.
        events_maxlen: Approximate bound on each job's event stream.
    """

    prefix: str = "sapiens-stream"
    group: str = "workers"
    max_deliveries: int = 3
    heartbeat_ttl_s: float = 30.0
    finished_ttl_s: float = 7 * 86400.0
    idempotency_ttl_s: float = 86400.0
    events_maxlen: int = 1000

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            msg = f"max_deliveries: expected >= 1, got {self.max_deliveries}"
            raise ValueError(msg)
        for name in ("heartbeat_ttl_s", "finished_ttl_s", "idempotency_ttl_s"):
            if not getattr(self, name) > 0:
                msg = f"{name}: expected > 0 seconds, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.events_maxlen < 1:
            msg = f"events_maxlen: expected >= 1, got {self.events_maxlen}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitResult:
    """Outcome of a submit: the job id and whether this call created it."""

    job_id: str
    created: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class JobLease:
    """A worker's ownership of a running job; every call it makes is fenced by ``token``.

    Attributes:
        job_id: The job.
        worker_id: The owning worker (the queue consumer).
        token: Fencing token; a later owner always has a larger one.
        msg_id: The queue entry that delivered the job.
        attempt: 1 for the first delivery, 2 after one reclaim, ...
        spec: The job spec given at submit.
        committed_frames: Watermark mirrored by the previous owner (the store's value wins).
        retries: times the job was queued again after it failed or was cancelled
            (:meth:`~storage.Coordinator.retry`); a retry's store, if any, is continued.
    """

    job_id: str
    worker_id: str
    token: int
    msg_id: str
    attempt: int
    spec: dict[str, Any]
    committed_frames: int
    retries: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEvent:
    """One entry of a job's event stream."""

    id: str
    type: str
    time_ms: int
    data: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """A job as stored in the registry.

    Attributes:
        job_id: The job id.
        state: queued, running, succeeded, failed or cancelled.
        created_ms: Creation time (server clock, ms since the epoch).
        updated_ms: Time of the last change.
        spec: The spec given at submit.
        meta: Submit metadata (client key, output URI, ...).
        attempts: Deliveries so far.
        owner: Worker that owns or last owned the job, if any.
        token: Current fencing token (0 before the first start).
        cancel_requested: Whether a cancel was asked for.
        committed_frames: Watermark mirrored from the result store.
        priority: Queue priority given at submit (0 for jobs that ``run`` started).
        retries: Times the job was queued again after it failed or was cancelled.
        counters: Progress counters.
        result: Result given on success.
        error: Error details on failure.
    """

    job_id: str
    state: JobState
    created_ms: int
    updated_ms: int
    spec: dict[str, Any]
    meta: dict[str, Any]
    attempts: int
    owner: str | None
    token: int
    cancel_requested: bool
    committed_frames: int
    priority: int = 0
    retries: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the state is terminal."""
        return self.state in TERMINAL_STATES

    @classmethod
    def from_hash(cls, job_id: str, raw: Mapping[bytes, bytes]) -> JobRecord:
        """Decode a job hash (HGETALL reply).

        Raises:
            InvalidValueError: If a field is missing or malformed.
        """
        where = f"job {job_id!r}"

        def text(name: str) -> str:
            return _field_text(raw, where, name)

        def integer(name: str) -> int:
            return _field_int(raw, where, name)

        state = text("state")
        if state not in _STATES:
            msg = f"{where}: field 'state' is {state!r}; expected one of {_STATES}"
            raise InvalidValueError(msg)
        counters = {k.decode()[2:]: integer(k.decode()) for k in raw if k.startswith(b"n:")}
        error = raw.get(b"error")
        return cls(
            job_id=job_id,
            state=state,  # type: ignore[arg-type]
            created_ms=integer("created_ms"),
            updated_ms=integer("updated_ms"),
            spec=unpack_map(raw.get(b"spec"), what=f"{where} field 'spec'"),
            meta=unpack_map(raw.get(b"meta"), what=f"{where} field 'meta'"),
            attempts=integer("attempts"),
            owner=_field_text(raw, f"job {job_id!r}", "owner") if b"owner" in raw else None,
            token=integer("token"),
            cancel_requested=text("cancel") == "1",
            committed_frames=integer("committed_frames"),
            priority=integer("priority") if b"priority" in raw else 0,
            retries=integer("retries") if b"retries" in raw else 0,
            counters=counters,
            result=unpack(raw[b"result"], what=f"{where} field 'result'")
            if b"result" in raw
            else None,
            error=unpack_map(error, what=f"{where} field 'error'") if error is not None else None,
        )


def raise_for_reply(job_id: str, reply: list[str], expected: str) -> None:
    """Raise the error a Lua script's status reply stands for (nothing for ``ok``)."""
    status = reply[0]
    if status == "notfound":
        msg = f"job {job_id!r} does not exist (never submitted, or expired)"
        raise JobNotFoundError(msg)
    if status == "badstate":
        msg = f"job {job_id!r} is {reply[1]!r}, expected {expected!r}"
        raise InvalidTransitionError(msg)
    if status == "fenced":
        msg = (
            f"job {job_id!r}: lease lost; owner is now {reply[1]!r} with token {reply[2]}. "
            f"Stop working on it and commit nothing more"
        )
        raise LeaseLostError(msg)
