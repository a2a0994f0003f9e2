"""Local process and file helpers of the embedded server (Linux and macOS)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from storage.errors import EmbeddedServerError

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the caller retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_is_our_server(pid: int, conf: Path) -> bool:
    """Whether ``pid`` is alive (not a zombie) and runs valkey-server with ``conf``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return any(part.endswith(b"valkey-server") for part in cmdline) and str(conf).encode() in (
        cmdline
    )


def set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to send SIGTERM to this process when its parent thread exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def locked(data_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir/lock`` (created 0700), waiting up to timeout_s."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(data_dir / "lock", "a+") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = f"timed out after {timeout_s}s waiting for the lock {data_dir}/lock"
                    raise EmbeddedServerError(msg) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, readable by the owner only (0600)."""
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
