"""Fixtures for storage integration tests: real servers, real processes, temp stores."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from storage.embedded import EmbeddedServer

PROCS = Path(__file__).with_name("storage_procs.py")


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One embedded Valkey for the session, stopped at the end."""
    server = EmbeddedServer.ensure(tmp_path_factory.mktemp("embedded-root"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def local_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Debian redis-server (Redis 7.0) on a random port, if the binary exists."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path_factory.mktemp("redis7")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--save", "", "--appendonly", "no", "--requirepass", "pw7"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:pw7@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.skip("redis-server did not start")
                import time

                time.sleep(0.05)
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to the test."""
    return f"sst-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``storage_procs.py`` children; any still running at the end are killed."""
    children: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(PROCS), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
