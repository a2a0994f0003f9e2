"""A service asked to run more jobs at once than its cluster's CPUs can hold must still finish
them (one after another if need be), not deadlock.

Each running job holds 1.25 CPUs of stage actors (decode 0.5, persons 0.5, writer 0.25) and
all share the Sapiens actor (1 CPU): on 4 logical CPUs, 4 jobs at once need 6. The scenario
of bench/load.py (an idle service, then a burst of jobs) runs in a child process with its own
cluster (a deadlocked job's threads never return, so the child is the unit that is cleaned up)
and reports how many jobs succeeded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (ppid first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> dict[int, str]:
    """Descendants of ``pid`` with their start times (which tell a reused pid apart)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, ValueError, IndexError):
            fields = _stat(int(entry.name))
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    out, stack = {}, [pid]
    while stack:
        for child, started in children.get(stack.pop(), []):
            out[child] = started
            stack.append(child)
    return out


def _alive(pid: int, started: str) -> bool:
    try:
        fields = _stat(pid)
    except (OSError, ValueError, IndexError):
        return False
    return fields[19] == started and fields[0] != "Z"


def _kill_if_same(pid: int, started: str) -> None:
    with suppress(OSError, ValueError, IndexError):
        if _stat(pid)[19] == started:
            os.kill(pid, signal.SIGKILL)


def test_more_jobs_than_the_cluster_can_hold_still_finish(tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "load.py"), "--jobs", "4", "--max-jobs", "4"]
    argv += ["--num-cpus", "4", "--timeout-s", "60", "--out", str(tmp_path / "capacity.json")]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(_descendants(proc.pid))  # Ray's processes, to be sure they go too
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pid, started in seen.items():
            _kill_if_same(pid, started)
    time.sleep(1)
    alive = {p for p, started in seen.items() if _alive(p, started)}
    assert not alive, f"processes of the child's cluster outlived it: {sorted(alive)}"
    result = json.loads((tmp_path / "capacity.json").read_text())
    assert result["states"] == {"succeeded": 4}, result["states"]
