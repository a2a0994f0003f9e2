"""A Ray head started with token authentication (``RAY_AUTH_MODE=token``, the suite's
``RAY_AUTH_TOKEN``; tests/integration/deploy/cluster.py) refuses clients without its token:
drivers (GCS) and the dashboard's HTTP API (Jobs API)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.deploy.cluster import free_port, ray_head

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_DRIVER = (
    "import ray, sys\n"
    "ray.init(address=sys.argv[1], log_to_driver=False)\n"
    "print('CONNECTED', ray.cluster_resources().get('CPU'))\n"
    "ray.shutdown()\n"
)


def _driver(address: str, token: str | None, home: Path) -> subprocess.CompletedProcess[str]:
    """A driver process joining ``address`` with ``token`` (None: no token at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)  # no ~/.ray/auth_token of the machine's user
    env["RAY_gcs_server_port_wait_time_s"] = "3"  # give up after 3 tries, not ~20
    if token is not None:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-c", _DRIVER, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_a_token_head_refuses_drivers_and_http_clients_with_a_wrong_token(
    tmp_path: Path,
) -> None:
    token = os.environ["RAY_AUTH_TOKEN"]
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    home = tmp_path / "home"
    home.mkdir()
    dashboard = free_port()
    with ray_head(tmp_path, cpus=1, dashboard_port=dashboard) as address:
        ok = _driver(address, token, home)
        assert ok.returncode == 0 and "CONNECTED 1.0" in ok.stdout, ok.stderr[-2000:]
        for name, wrong in (("wrong token", secrets.token_hex(32)), ("no token", None)):
            refused = _driver(address, wrong, home)
            assert refused.returncode != 0, name
            assert "CONNECTED" not in refused.stdout, name
            assert "InvalidAuthToken" in refused.stderr, (name, refused.stderr[-2000:])
        jobs = f"http://127.0.0.1:{dashboard}/api/jobs/"
        assert _http_status(jobs, token) == 200
        for wrong in (secrets.token_hex(32), None):
            assert _http_status(jobs, wrong) in (401, 403)
