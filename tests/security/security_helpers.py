"""Shared pieces of the security tests: live pickle payloads and private server processes."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PROTOCOLS = (0, 2, 4, 5)


class OpenForWriting:
    """Unpickling this creates ``path`` (``open(path, "w")``): proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


class ShellTouch:
    """Unpickling this runs ``touch path`` through ``os.system``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when loaded, by protocol and callable."""
    out = {}
    for proto in PROTOCOLS:
        out[f"open-p{proto}"] = pickle.dumps(OpenForWriting(marker), protocol=proto)
        out[f"system-p{proto}"] = pickle.dumps(ShellTouch(marker), protocol=proto)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server(data: Path, *args: str, probe: redis.Redis | None = None) -> Iterator[int]:
    """A private ``redis-server`` with ``args`` (plus a private dir and no persistence); yields
    its process id once ``probe`` (or, without one, the log) says it is ready."""
    data.mkdir(parents=True, exist_ok=True)
    log = data / "redis.log"
    argv = [REDIS_SERVER, "--dir", str(data), "--save", "", "--appendonly", "no"]
    argv += ["--logfile", str(log), *args]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise RuntimeError(f"redis-server exited ({proc.returncode}): {text[-800:]}")
            ready = log.exists() and "Ready to accept connections" in log.read_text("latin-1")
            if probe is not None:
                try:
                    ready = bool(probe.ping())
                except redis.AuthenticationError:
                    ready = True  # up, and asking for a password
                except (redis.ConnectionError, redis.TimeoutError):
                    ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {argv}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
