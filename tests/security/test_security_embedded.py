"""The embedded server (no Redis URL configured) listens on loopback only and needs a password.

Started exactly as the CLI starts it, through ``storage.connect(None, root=...)``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage import RedisConnection, connect

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
