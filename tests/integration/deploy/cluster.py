"""A real Ray head started as its own process tree (``ray start --head --block``), for tests
that need what ``ray.init()`` does not give: the autoscaler with the fake multinode provider,
or the dashboard's Jobs API. Torn down by killing exactly that cluster's processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
FAKE_CLUSTER_YAML = Path(__file__).with_name("fake_cluster.yaml")
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_pids(port: int) -> list[int]:
    """Processes of the cluster whose GCS listens on ``port`` (their command lines name it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f":{port}" in cmd or f"--port={port}" in cmd or f"--gcs-server-port={port}" in cmd:
            pids.append(int(entry.name))
    return pids


@contextmanager
def ray_head(
    tmp: Path,
    *,
    fake_autoscaler: bool = False,
    dashboard_port: int | None = None,
    cpus: int = 4,
) -> Iterator[str]:
    """Start a Ray head with token authentication (the suite's ``RAY_AUTH_TOKEN``, see
    tests/conftest.py); yields its GCS address (``ip:port``)."""
    import ray._private.services as services

    port = free_port()
    ip = services.get_node_ip_address()
    env = {
        **os.environ,
        "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.environ["RAY_AUTH_TOKEN"],
    }
    env.pop("RAY_ADDRESS", None)
    argv = [str(RAY), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}"]
    argv += ["--num-gpus=0", "--object-store-memory=200000000", "--disable-usage-stats"]
    # Ports of their own, so another Ray instance on this machine cannot take them first.
    argv += [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    argv += [
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]
    if dashboard_port is None:
        argv.append("--include-dashboard=false")
    else:
        argv += ["--include-dashboard=true", f"--dashboard-port={dashboard_port}"]
        argv += ["--dashboard-host=127.0.0.1"]
    if fake_autoscaler:
        config = yaml.safe_load(FAKE_CLUSTER_YAML.read_text())
        config["provider"]["gcs_address"] = f"{ip}:{port}"  # worker nodes join this head
        config["available_node_types"]["ray.head.default"]["resources"]["CPU"] = cpus
        path = tmp / "fake_cluster.yaml"
        path.write_text(yaml.safe_dump(config))
        argv.append(f"--autoscaling-config={path}")
        env["RAY_FAKE_CLUSTER"] = "1"
    log = open(tmp / "ray-head.log", "wb")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"{ip}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with socket.create_connection((ip, port), timeout=1):
                    break
            except OSError:
                assert head.poll() is None, (tmp / "ray-head.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.5)
        if dashboard_port is not None:
            _wait_http(dashboard_port, deadline)
        yield address
    finally:
        with suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        for _ in range(3):  # worker nodes of the fake provider live in their own sessions
            for pid in _cluster_pids(port):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        log.close()


def _wait_http(port: int, deadline: float) -> None:
    import urllib.error
    import urllib.request

    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:  # up, and asking for the token
            return
        except OSError:
            assert time.monotonic() < deadline, "the Ray dashboard did not start"
            time.sleep(1)
