"""A private server that answers with errors or loses its data under a live heartbeat thread.

Each test owns its embedded server, so it may reconfigure or flush it without touching the
servers other tests share.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from storage import Coordinator, CoordinatorConfig, EmbeddedServer, HeartbeatThread

pytestmark = pytest.mark.redis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer.ensure(tmp_path / "root")
    try:
        yield srv
    finally:
        srv.stop()


def _until(pred: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_heartbeat_thread_survives_error_replies(server: EmbeddedServer) -> None:
    """An OOM error reply (maxmemory reached) used to end the heartbeat thread for good."""
    client = server.client()
    coord = Coordinator(client, CoordinatorConfig(heartbeat_ttl_s=1.5))
    hb = HeartbeatThread(coord, "w1", interval_s=0.1).start()
    try:
        client.config_set("maxmemory", "1")  # every write is now refused with OOM
        client.delete(coord.keys.worker("w1"))
        time.sleep(0.6)  # several beats answered with an error reply
        assert not coord.worker_alive("w1")
        client.config_set("maxmemory", "0")
        _until(lambda: coord.worker_alive("w1"))
        assert hb._thread.is_alive()
    finally:
        hb.stop()
        client.close()


def test_a_real_data_loss_loses_the_lease_and_the_service_claims_again(
    server: EmbeddedServer,
) -> None:
    """FLUSHALL under a worker that holds a lease and has cached its consumer group."""
    client = server.client()
    coord = Coordinator(client, CoordinatorConfig(heartbeat_ttl_s=1.5))
    coord.submit({"n": 1}, job_id="before")
    lease = coord.claim("w1")
    assert lease is not None
    hb = HeartbeatThread(coord, "w1", interval_s=0.1).start()
    hb.hold(lease)
    try:
        client.flushall()
        _until(lambda: hb.lost("before"))
        _until(lambda: coord.worker_alive("w1"))  # registered again by the next beat
        coord.submit({"n": 2}, job_id="after")
        again = coord.claim("w1")
        assert again is not None and again.job_id == "after"
        assert again.token > lease.token
        assert hb._thread.is_alive()
    finally:
        hb.stop()
        client.close()
