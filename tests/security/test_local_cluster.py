"""The Ray cluster that `serve` (and `run`) start on a machine: closed to the network, with a
private token file, and never replaced by another cluster when the service is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import Coordinator, connect, stop_embedded

pytestmark = [pytest.mark.ray, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def _parents() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            out[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tree(root: int) -> set[int]:
    """``root`` and every process descending from it."""
    parents, tree, grew = _parents(), {root}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _listening(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, hex local address) of every listening TCP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:
                found.append((inodes[inode], local.split(":")[0]))
    return found


def test_a_service_cluster_is_loopback_only_private_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "REDIS_URL"))}
    env.pop("SAPIENS_STREAM_REDIS_URL", None)
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), RAY_AUTH_MODE="token")
    err = tmp_path / "serve.err"
    out = tmp_path / "out"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--output-root", str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 120
        while "Started a local Ray instance" not in err.read_text():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "serve did not start its cluster"
            time.sleep(0.5)
        # Serving once its heartbeat is in Redis (its signal handling is set up by then).
        coord = Coordinator(connect(None, root=out).client)
        while not coord.workers():
            assert proc.poll() is None, err.read_text()[-3000:]
            assert time.monotonic() < deadline, "serve did not register"
            time.sleep(0.5)
        time.sleep(2)  # let the raylet start its workers and agents
        tree = _tree(proc.pid)
        sockets = _listening(tree)
        assert len(sockets) >= 3, sockets  # GCS, raylet, ... are found
        exposed = [(pid, addr) for pid, addr in sockets if addr not in _LOOPBACK]
        assert not exposed, f"listening beyond loopback: {exposed}"
        token = home / ".ray" / "auth_token"
        assert token.is_file() and (token.stat().st_mode & 0o077) == 0, oct(token.stat().st_mode)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        time.sleep(2)
        text = err.read_text()
        assert text.count("Started a local Ray instance") == 1, text[-3000:]
        assert "Connecting to existing Ray cluster" not in text
        # Ray's processes end with the service; the embedded Redis server it started detached
        # stays for later commands (stopped below).
        left = [pid for pid in tree if _alive(pid) and _name(pid) != "valkey-server"]
        for _ in range(20):
            if not left:
                break
            time.sleep(0.5)
            left = [pid for pid in left if _alive(pid)]
        assert not left, f"processes of the stopped service remain: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_embedded(out)
