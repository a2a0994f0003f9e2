"""Fixtures of the security tests: a Redis-compatible server, coordinators, live payloads."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from security_helpers import payloads

from storage import Coordinator, CoordinatorConfig, EmbeddedServer


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``SAPIENS_STREAM_TEST_REDIS_URL`` when set, else a private embedded server."""
    url = os.environ.get("SAPIENS_STREAM_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedServer.ensure(tmp_path_factory.mktemp("security-redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def client(server_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(server_url)
    yield c
    c.close()


@pytest.fixture
def coord(client: redis.Redis) -> Iterator[Coordinator]:
    """A coordinator under a key prefix of its own; its keys are deleted afterwards."""
    prefix = f"sec-{uuid.uuid4().hex[:12]}"
    yield Coordinator(client, CoordinatorConfig(prefix=prefix))
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    """The file every payload would create; the test fails if it exists afterwards."""
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), f"a pickle payload was executed: {path} exists"


@pytest.fixture
def live_payloads(marker: Path, tmp_path: Path) -> dict[str, bytes]:
    """Payloads for ``marker``; checked first to really run when unpickled (on a copy aimed
    at another file), so a test that sees no file proves the loader refused them."""
    probe = tmp_path / "probe-ran"
    for name, data in payloads(probe).items():
        loaded = pickle.loads(data)  # the point: prove that the payload is live
        if hasattr(loaded, "close"):
            loaded.close()
        assert probe.exists(), name
        probe.unlink()
    return payloads(marker)
