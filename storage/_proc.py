"""Local process and file helpers of the embedded server (Linux and macOS)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
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


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


_SERVER_BINARY = re.compile(rb"(?:^|/)(?:valkey|redis)-server(?: |$)")


def runs_here(pid: int, data_dir: Path) -> tuple[bytes, list[str]] | None:
    """The command line and open fds of ``pid`` if it is a live (not zombie) valkey or redis
    server of this user running in ``data_dir``, else None (Linux)."""
    proc = Path(f"/proc/{pid}")
    try:
        zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        mine = proc.stat().st_uid == os.getuid()
        cwd = Path(os.readlink(proc / "cwd"))
        fds = os.listdir(proc / "fd")
    except (OSError, IndexError):
        return None
    if zombie or not mine or cwd != data_dir or not _SERVER_BINARY.search(title):
        return None
    return title, fds


def is_our_server(pid: int, port: int, data_dir: Path) -> bool:
    """Whether ``pid`` is the server of ``data_dir``, serving ``port``.

    Linux: :func:`runs_here`, the command line (which the server rewrites to
    ``<binary> 127.0.0.1:<port>``) names the port, and the pid holds the socket listening on
    it. Elsewhere (no /proc) only liveness is checked; the authenticated PING decides.
    """
    if not Path("/proc/self").is_dir():
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    found = runs_here(pid, data_dir)
    if found is None or f"127.0.0.1:{port}".encode() not in found[0].split():
        return False
    sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    for fd in found[1]:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
    return False


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
