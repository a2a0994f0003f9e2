"""The embedded Valkey: safety settings, reuse, detach, kill -9 and restart on the same data."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from storage import (
    Coordinator,
    CoordinatorConfig,
    EmbeddedServer,
    connect,
    stop_embedded,
)

pytestmark = pytest.mark.redis

Spawn = Callable[..., subprocess.Popen[str]]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_safe_defaults(tmp_path: Path) -> None:
    with EmbeddedServer.ensure(tmp_path) as server:
        assert server.owned
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.state.port, retry=Retry(NoBackoff(), 0)).ping()
        client = server.client()
        config = client.config_get("*")
        assert config["bind"] == "127.0.0.1"
        assert config["appendonly"] == "yes"
        assert config["protected-mode"] == "yes"
        assert config["requirepass"] == server.state.password
        assert Path(config["dir"]) == tmp_path.resolve() / ".redis"
        for name in ("server.json", "valkey.conf"):
            mode = stat.S_IMODE((tmp_path / ".redis" / name).stat().st_mode)
            assert mode == 0o600, name
        assert json.loads((tmp_path / ".redis" / "server.json").read_text())["pid"] == server.pid
        client.close()
    assert pid_gone(server.pid)
    assert not (tmp_path / ".redis" / "server.json").exists()


def test_later_processes_reuse_the_server(tmp_path: Path, spawn: Spawn) -> None:
    with EmbeddedServer.ensure(tmp_path) as server:
        proc = spawn("embedded", str(tmp_path))
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.split() == ["server", str(server.pid), "0"]  # same pid, not owned
        assert server.alive()  # the reusing process did not stop it


def test_detached_server_outlives_its_starter(tmp_path: Path, spawn: Spawn) -> None:
    proc = spawn("embedded", str(tmp_path), "--detach")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    pid = int(out.split()[1])
    try:
        reused = EmbeddedServer.ensure(tmp_path)
        assert (reused.pid, reused.owned) == (pid, False)
        assert reused.alive()
        reused.close()  # not ours: stays up
        assert reused.alive()
    finally:
        assert stop_embedded(tmp_path)
    assert wait_until(lambda: pid_gone(pid))
    assert not stop_embedded(tmp_path)


def test_server_dies_with_a_killed_owner_and_restarts_on_its_data(
    tmp_path: Path, spawn: Spawn
) -> None:
    proc = spawn("embedded", str(tmp_path), "--hold", "60")
    assert proc.stdout is not None
    first_pid = int(proc.stdout.readline().split()[1])
    first = EmbeddedServer.ensure(tmp_path)
    first.client().set("survives", b"yes")
    os.kill(proc.pid, signal.SIGKILL)
    assert wait_until(lambda: pid_gone(first_pid))  # parent-death signal, clean shutdown
    with EmbeddedServer.ensure(tmp_path) as second:
        assert second.owned and second.pid != first_pid
        assert second.client().get("survives") == b"yes"


def test_kill9_restart_loses_no_job(tmp_path: Path, prefix: str) -> None:
    config = CoordinatorConfig(prefix=prefix, heartbeat_ttl_s=0.3)
    server = EmbeddedServer.ensure(tmp_path)
    try:
        coord = Coordinator(server.client(), config)
        ids = [coord.submit({"n": i}, client_key=f"k{i}").job_id for i in range(5)]
        lease = coord.claim("w1")
        assert lease is not None
        coord.progress(lease, committed_frames=8)
        os.kill(server.pid, signal.SIGKILL)
        assert wait_until(lambda: pid_gone(server.pid))
    finally:
        server.stop()  # reaps the killed process; nothing left to shut down
    with EmbeddedServer.ensure(tmp_path) as restarted:
        assert restarted.pid != server.pid
        coord = Coordinator(restarted.client(), config)
        assert {r.job_id for r in coord.list_jobs()} == set(ids)
        assert coord.get(ids[0]).committed_frames == 8
        assert coord.submit({}, client_key="k3").job_id == ids[3]
        time.sleep(0.35)
        leases = [coord.claim("w2") for _ in range(5)]
        assert sorted(x.job_id for x in leases if x is not None) == sorted(ids)
        assert coord.claim("w2") is None
        assert next(x for x in leases if x and x.job_id == ids[0]).attempt == 2


def test_configured_url_always_wins(
    tmp_path: Path, embedded_server: EmbeddedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPIENS_STREAM_REDIS_URL", embedded_server.url)
    with connect(None, root=tmp_path / "root") as conn:
        assert conn.server is None
        assert conn.client.ping()
        assert "***" in conn.url and embedded_server.state.password not in conn.url
    assert not (tmp_path / "root" / ".redis").exists()


def test_connect_without_url_uses_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAPIENS_STREAM_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with connect(None, root=tmp_path) as conn:
        assert conn.server is not None and conn.server.owned
        pid = conn.server.pid
        assert conn.client.ping()
    assert wait_until(lambda: pid_gone(pid))
