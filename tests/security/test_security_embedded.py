"""The embedded server (no Redis URL configured) listens on loopback only and needs a password.

Started exactly as the CLI starts it, through ``storage.connect(None, root=...)``. Its data
directory must be private to this user, and a ``server.json`` is trusted only when its pid is
really this directory's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import storage.embedded
from storage import (
    EmbeddedServer,
    EmbeddedServerError,
    InvalidValueError,
    RedisConnection,
    connect,
)

pytestmark = pytest.mark.redis


def _connect(root: Path) -> RedisConnection:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("SAPIENS_STREAM_REDIS_URL", "REDIS_URL"):
            mp.delenv(name, raising=False)
        conn = connect(None, root=root)
    assert conn.server is not None and conn.server.owned
    return conn


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisConnection]:
    conn = _connect(tmp_path_factory.mktemp("embedded") / "root")
    try:
        yield conn
    finally:
        conn.close()


def _config(conn: RedisConnection, name: str) -> str:
    reply = conn.client.config_get(name)
    value = reply[name.encode()] if name.encode() in reply else reply[name]
    return value.decode() if isinstance(value, bytes) else str(value)


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                addr, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    if len(addr) == 8:
                        found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                    else:
                        words = [bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8)]
                        found.append(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


def _non_loopback_ipv4() -> list[str]:
    """This machine's own IPv4 addresses other than 127.0.0.0/8."""
    found: set[str] = set()
    with contextlib.suppress(OSError):
        text = Path("/proc/net/fib_trie").read_text()
        found.update(re.findall(r"\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL", text))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    return sorted(a for a in found if not a.startswith("127."))


def test_it_binds_loopback_only_with_protected_mode(embedded: RedisConnection) -> None:
    assert _config(embedded, "bind").split() == ["127.0.0.1"]
    assert _config(embedded, "protected-mode") == "yes"
    port = embedded.server.state.port
    assert _listening(port) == ["127.0.0.1"]


def test_it_requires_a_generated_password(embedded: RedisConnection) -> None:
    password = _config(embedded, "requirepass")
    assert password == embedded.server.state.password
    assert len(password) >= 24 and password not in embedded.url and "***" in embedded.url
    port = embedded.server.state.port
    for kwargs in ({}, {"password": "wrong"}, {"username": "default", "password": ""}):
        client = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0), **kwargs
        )
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # a raw client
        s.sendall(b"CONFIG GET requirepass\r\n")
        assert s.recv(200).startswith(b"-NOAUTH")


def test_it_is_not_reachable_through_other_addresses(embedded: RedisConnection) -> None:
    addresses = _non_loopback_ipv4()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    port = embedded.server.state.port
    for address in addresses:
        with pytest.raises(OSError):  # refused (nothing listens there) or unroutable
            socket.create_connection((address, port), timeout=2).close()


def test_its_secrets_are_private_files(embedded: RedisConnection) -> None:
    data = embedded.server.data_dir
    for name in ("server.json", "valkey.conf"):
        mode = stat.S_IMODE((data / name).stat().st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))
    assert embedded.server.state.password in (data / "valkey.conf").read_text()


def test_it_stops_with_its_owner(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "root")
    port = conn.server.state.port
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- a data directory that already exists ---------------------------------------------------


def _data_dir(root: Path, mode: int = 0o700) -> Path:
    data = root / ".redis"
    data.mkdir(parents=True)
    data.chmod(mode)
    return data


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720])
def test_a_data_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    data = _data_dir(tmp_path / "root", mode)
    with pytest.raises(EmbeddedServerError, match=f"mode {mode:o}.*not writable by others"):
        _connect(tmp_path / "root")
    assert sorted(p.name for p in data.iterdir()) == []  # nothing started, nothing written


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711, 0o704])
def test_a_data_directory_others_can_read_is_made_private(tmp_path: Path, mode: int) -> None:
    data = _data_dir(tmp_path / "root", mode)
    conn = _connect(tmp_path / "root")
    try:
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert conn.client.ping()
    finally:
        conn.close()


@pytest.mark.skipif(os.getuid() != 0, reason="handing a file to another user needs root")
@pytest.mark.parametrize("planted", [".redis", ".redis/server.json", ".redis/appendonlydir"])
def test_files_of_another_user_are_refused(tmp_path: Path, planted: str) -> None:
    data = _data_dir(tmp_path / "root")
    (data / "appendonlydir").mkdir(mode=0o700)
    (data / "server.json").write_text("{}")
    os.chown(tmp_path / "root" / planted, 4242, 4242)
    with pytest.raises(EmbeddedServerError, match="owned by uid 4242"):
        _connect(tmp_path / "root")


@pytest.mark.parametrize("root", ["", "/", "//", "/tmp/.."])
def test_the_filesystem_root_or_an_empty_root_is_refused(
    root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "" would otherwise mean the working directory

    def touched(*args: object) -> None:
        raise AssertionError(f"the data directory of root {root!r} was touched")

    # Fail before anything is created, should the check ever be missing.
    monkeypatch.setattr(storage.embedded, "_private_dir", touched)
    monkeypatch.setattr(storage.embedded, "locked", touched)
    with pytest.raises(InvalidValueError, match="output root"):
        EmbeddedServer.ensure(root)


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """Another output root's server: alive, answering its own port and password."""
    server = EmbeddedServer.ensure(tmp_path_factory.mktemp("decoy"))
    try:
        yield server
    finally:
        server.stop()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("pid_of", ["a dead process", "an unrelated process", "another server"])
def test_a_server_json_naming_another_process_is_not_trusted(
    tmp_path: Path, decoy: EmbeddedServer, pid_of: str
) -> None:
    with contextlib.ExitStack() as stack:
        if pid_of == "a dead process":
            pid = _dead_pid()
        elif pid_of == "an unrelated process":
            sleeper = stack.enter_context(subprocess.Popen(["sleep", "60"]))
            stack.callback(sleeper.kill)
            pid = sleeper.pid
        else:
            pid = decoy.pid
        data = _data_dir(tmp_path / "root")
        state = {"pid": pid, "port": decoy.state.port, "password": decoy.state.password,
                 "data_dir": str(data.resolve()), "detached": False, "started_at": 0.0}  # fmt: skip
        (data / "server.json").write_text(json.dumps(state))
        (data / "server.json").chmod(0o600)
        conn = stack.enter_context(_connect(tmp_path / "root"))
        assert (conn.server.pid, conn.server.state.port) != (decoy.pid, decoy.state.port)
        assert json.loads((data / "server.json").read_text())["pid"] == conn.server.pid
        key = f"mine-{tmp_path.name}"
        conn.client.set(key, "1")
        with contextlib.closing(decoy.client()) as other:
            assert other.get(key) is None
