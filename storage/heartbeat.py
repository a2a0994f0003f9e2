"""A background thread that keeps a worker's heartbeat and leases alive.

Example (needs a server)::

    with HeartbeatThread(coord, "worker-1", interval_s=5) as hb:
        lease = coord.claim("worker-1")
        hb.hold(lease)
        ...                       # work; check hb.lost(lease.job_id) between blocks
        hb.release(lease)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import redis

from storage.coordination import Coordinator
from storage.jobs import JobLease

__all__ = ["HeartbeatThread"]

logger = logging.getLogger(__name__)


class HeartbeatThread:
    """Calls :meth:`Coordinator.heartbeat` every ``interval_s`` for the leases it holds.

    Args:
        coordinator: The coordinator (its client must be safe to share with one thread;
            redis-py clients are).
        worker_id: This worker's id.
        interval_s: Period; keep it well below the configured heartbeat TTL (TTL / 3).
    """

    def __init__(self, coordinator: Coordinator, worker_id: str, interval_s: float) -> None:
        ttl = coordinator.config.heartbeat_ttl_s
        if not 0 < interval_s < ttl:
            msg = f"interval_s must be in (0, heartbeat_ttl_s={ttl}), got {interval_s}"
            raise ValueError(msg)
        self._coord = coordinator
        self._worker_id = worker_id
        self._interval = interval_s
        self._leases: dict[str, JobLease] = {}
        self._lost: set[str] = set()
        self._info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{worker_id}")
        self._thread.daemon = True

    def start(self) -> HeartbeatThread:
        """Beat once now, then start the thread."""
        self.beat()
        self._thread.start()
        return self

    def hold(self, lease: JobLease) -> None:
        """Keep ``lease`` alive from now on."""
        with self._lock:
            self._leases[lease.job_id] = lease
            self._lost.discard(lease.job_id)

    def release(self, lease: JobLease) -> None:
        """Stop keeping ``lease`` alive (after the job finished); a newer lease on the same job
        (a later claim of it) stays held."""
        with self._lock:
            held = self._leases.get(lease.job_id)
            if held is not None and held.token == lease.token:
                del self._leases[lease.job_id]

    def set_info(self, info: Mapping[str, Any]) -> None:
        """Facts the next heartbeats publish with the worker (plain msgpack-able data)."""
        with self._lock:
            self._info = dict(info)

    def lost(self, job_id: str) -> bool:
        """Whether a heartbeat found that another worker took the job over."""
        with self._lock:
            return job_id in self._lost

    def beat(self) -> None:
        """Send one heartbeat now."""
        with self._lock:
            leases = list(self._leases.values())
            info = self._info
        lost = self._coord.heartbeat(self._worker_id, leases, info=info)
        if lost:
            logger.warning("worker %s lost leases on %s", self._worker_id, lost)
            with self._lock:
                self._lost.update(lost)
                for job_id in lost:
                    self._leases.pop(job_id, None)

    def _run(self) -> None:
        # Nothing the server answers may end this thread: a connection error, an error reply
        # (OOM, READONLY during a failover, NOGROUP after a data loss) or a malformed reply
        # costs one beat, and the next one tries again. Leases lapse only by their TTL.
        while not self._stop.wait(self._interval):
            try:
                self.beat()
            except redis.RedisError as e:
                logger.warning("heartbeat of %s failed: %s", self._worker_id, e)
            except Exception:
                logger.exception("heartbeat of %s failed", self._worker_id)

    def stop(self) -> None:
        """Stop the thread (the worker key then expires after its TTL)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> HeartbeatThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
