"""Every Redis key of the coordination layer, built from one configurable prefix.

Layout (``P`` = prefix, schema ``v1``)::

    P:v1:job:<job_id>            hash   job record (state, owner, token, counters, payloads)
    P:v1:job:<job_id>:events     stream bounded per-job event log (XADD MAXLEN ~)
    P:v1:idem:<sha256(key)>      string client key -> job id (SET NX EX)
    P:v1:queue                   stream delivered jobs, consumer group ``workers`` (PEL = leases)
    P:v1:queue:waiting           zset   queued jobs not delivered yet: score -priority, member
                                        '<20-digit submit number>:<job_id>' (FIFO within a level)
    P:v1:queue:seq               string submit counter (INCR) numbering the waiting members
    P:v1:fence                   string fencing-token counter (INCR)
    P:v1:jobs                    zset   all job ids by creation time (ms)
    P:v1:state:<state>           zset   job ids in a state, by time of the transition (ms)
    P:v1:worker:<worker_id>      string worker heartbeat (msgpack, EX ttl)

Example:
    >>> k = Keys("acme")
    >>> k.job("j-1"), k.queue
    ('acme:v1:job:j-1', 'acme:v1:queue')
    >>> k.job("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    storage.errors.InvalidJobIdError: job id '../x' is invalid: expected 1-64 characters ...
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Final

from storage.errors import InvalidJobIdError

__all__ = [
    "DEFAULT_PREFIX",
    "Keys",
    "new_job_id",
    "validate_id",
    "validate_prefix",
    "validate_worker_id",
]

DEFAULT_PREFIX: Final = "sapiens-stream"
SCHEMA: Final = "v1"
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_WORKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
STATES: Final = ("queued", "running", "succeeded", "failed", "cancelled")


def new_job_id() -> str:
    """Return a new, time-sortable job id such as ``j0192f3a1b2c3-9f8e7d6c5b``."""
    return f"j{time.time_ns() // 1_000_000:012x}-{secrets.token_hex(5)}"


def validate_id(value: object, kind: str = "job id") -> str:
    """Return ``value`` if it is a safe job id, else raise InvalidJobIdError.

    Safe ids cannot escape a Redis key namespace (no ``:``, ``{``, ``*``) or a path
    (no ``/``, ``.``, ``..``), so they can name ``<root>/<job_id>.zarr`` too.
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        msg = (
            f"{kind} {value!r} is invalid: expected 1-64 characters from [A-Za-z0-9_-], "
            f"starting with a letter or digit"
        )
        raise InvalidJobIdError(msg)
    return value


def validate_worker_id(value: object) -> str:
    """Return ``value`` if it is a safe worker id (like job ids, dots allowed, <= 128)."""
    if not isinstance(value, str) or not _WORKER_RE.fullmatch(value):
        msg = (
            f"worker id {value!r} is invalid: expected 1-128 characters from [A-Za-z0-9_.-], "
            f"starting with a letter or digit"
        )
        raise InvalidJobIdError(msg)
    return value


def validate_prefix(value: object) -> str:
    """Return ``value`` if it is a valid key prefix, else raise InvalidJobIdError."""
    if not isinstance(value, str) or not _PREFIX_RE.fullmatch(value):
        msg = f"key prefix {value!r} is invalid: expected 1-64 characters from [A-Za-z0-9_.-]"
        raise InvalidJobIdError(msg)
    return value


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key under one prefix; ids are validated before they enter a key."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    @property
    def base(self) -> str:
        """``<prefix>:v1``: the namespace of every key."""
        return f"{self.prefix}:{SCHEMA}"

    @property
    def queue(self) -> str:
        """The work-queue stream."""
        return f"{self.base}:queue"

    @property
    def waiting(self) -> str:
        """Zset of queued jobs not delivered yet, highest priority first (see the layout)."""
        return f"{self.queue}:waiting"

    @property
    def queue_seq(self) -> str:
        """The submit counter that keeps the waiting jobs of one priority in FIFO order."""
        return f"{self.queue}:seq"

    @property
    def fence(self) -> str:
        """The fencing-token counter."""
        return f"{self.base}:fence"

    @property
    def all_jobs(self) -> str:
        """Zset of all job ids scored by creation time (ms)."""
        return f"{self.base}:jobs"

    def job(self, job_id: str) -> str:
        """The job's hash."""
        return f"{self.base}:job:{validate_id(job_id)}"

    def events(self, job_id: str) -> str:
        """The job's bounded event stream."""
        return f"{self.job(job_id)}:events"

    def state(self, state: str) -> str:
        """Zset of job ids currently in ``state``."""
        if state not in STATES:
            msg = f"unknown job state {state!r}; expected one of {STATES}"
            raise ValueError(msg)
        return f"{self.base}:state:{state}"

    def worker(self, worker_id: str) -> str:
        """The worker's heartbeat key."""
        return f"{self.base}:worker:{validate_worker_id(worker_id)}"

    def idempotency(self, client_key: str) -> str:
        """The client-key mapping; the key is hashed, so any string is safe."""
        if not isinstance(client_key, str) or not 0 < len(client_key) <= 1024:
            msg = f"client key must be a non-empty string of <= 1024 chars, got {client_key!r}"
            raise InvalidJobIdError(msg)
        digest = hashlib.sha256(client_key.encode()).hexdigest()
        return f"{self.base}:idem:{digest}"

    def state_keys(self) -> list[str]:
        """Every per-state zset, in STATES order (the Lua scripts take them in this order)."""
        return [self.state(s) for s in STATES]
