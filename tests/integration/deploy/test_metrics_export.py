"""The pipeline's metrics reach Ray's Prometheus endpoint, and the Grafana dashboard plots only
metrics the code defines.

The export test starts a real local Ray cluster with a known metrics export port, serves a
small job through the real embedded Redis-compatible server, and scrapes
``http://127.0.0.1:<port>/metrics`` as Prometheus would.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.metrics import METRICS, exported_names
from flows.service import JobService
from flows.spec import JobSpec

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "sapiens-stream.json"
STRIDE = 40  # 341 decoded frames -> 9 sampled
SAMPLED = 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The ``sapiens_stream`` samples of the endpoint: name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "sapiens_stream_" in sample.name:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


@pytest.fixture
def metrics_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A local cluster as ``serve`` starts one (:func:`flows.raylocal.ensure_ray`), exporting
    metrics on the port of ``SAPIENS_STREAM_METRICS_PORT``, each process reporting every
    second (``RAY_metrics_report_interval_ms``; Ray's default is 10 s); yields the port."""
    import ray
    from ray._private import auto_init_hook, ray_constants

    from flows.raylocal import METRICS_PORT_ENV, ensure_ray

    # ensure_ray switches these off for the process; give them back afterwards, absent ones
    # included (a loopback-only RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 left in the environment
    # would bind the Ray heads later tests start to 127.0.0.1)
    saved = {
        v: os.environ.get(v)
        for v in ("RAY_ENABLE_AUTO_CONNECT", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    monkeypatch.setattr(auto_init_hook, "enable_auto_connect", auto_init_hook.enable_auto_connect)
    port = _free_port()
    monkeypatch.setenv(METRICS_PORT_ENV, str(port))
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    ensure_ray()
    try:
        yield port
    finally:
        ray.shutdown()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def test_a_metrics_port_that_is_not_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.raylocal import METRICS_PORT_ENV, _metrics_port

    for bad in ("http", "0", "70000", "-1"):
        monkeypatch.setenv(METRICS_PORT_ENV, bad)
        with pytest.raises(ValueError, match=METRICS_PORT_ENV):
            _metrics_port()
    monkeypatch.setenv(METRICS_PORT_ENV, " 9100 ")
    assert _metrics_port() == 9100
    monkeypatch.delenv(METRICS_PORT_ENV)
    assert _metrics_port() is None


def _missing(samples: dict[str, list[tuple[dict[str, str], float]]], job: str) -> list[str]:
    """What the scrape still lacks of what one served job must show."""

    def values(name: str, **tags: str) -> list[float]:
        rows = samples.get(exported_names()[name], [])
        return [v for labels, v in rows if all(labels.get(k) == t for k, t in tags.items())]

    def has_tag(name: str, tag: str) -> bool:
        rows = samples.get(exported_names()[name], [])
        return bool(rows) and all(labels.get(tag) for labels, _ in rows)

    checks = {
        "frames_decoded == sampled frames of the job": values("frames_decoded", job=job)
        == [SAMPLED],
        "frames_committed == sampled frames of the job": values("frames_committed", job=job)
        == [SAMPLED],
        "actors >= 1 for the model": any(v >= 1 for v in values("actors"))
        and has_tag("actors", "model"),
        "actors_target exported per model": has_tag("actors_target", "model"),
        "scale_events up >= 1": any(v >= 1 for v in values("scale_events", direction="up"))
        and has_tag("scale_events", "model"),
        "actor_busy_fraction in (0, 1]": any(0 < v <= 1 for v in values("actor_busy_fraction"))
        and has_tag("actor_busy_fraction", "actor"),
        "actor_fill in (0, 1]": any(0 < v <= 1 for v in values("actor_fill"))
        and has_tag("actor_fill", "actor"),
        "jobs by state": has_tag("jobs", "state"),
        "jobs_finished succeeded == 1": values("jobs_finished", outcome="succeeded") == [1],
    }
    return [what for what, ok in checks.items() if not ok]


@pytest.mark.ray
@pytest.mark.redis
def test_a_served_job_shows_its_metrics_on_rays_prometheus_endpoint(
    metrics_cluster: int, shared_clip: Path, tmp_path: Path
) -> None:
    from storage import Coordinator, connect

    port = metrics_cluster
    conn = connect(None, root=tmp_path / "root")  # the embedded server
    coord = Coordinator(conn.client)
    job = "metrics-job"
    spec = JobSpec.from_dict(
        {
            "source": str(shared_clip),
            "job_id": job,
            "output_root": str(tmp_path),
            "sampling": {"stride": STRIDE},
            "max_side": 160,
            "batch_size": 4,
        }
    )
    stop = threading.Event()
    service = JobService(coord, max_jobs=1, worker_id="metrics-serve", scale_interval_s=0.5)
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        coord.submit(spec.to_dict(), job_id=job)
        # Ray's metrics agent exports what the processes reported, a report interval late:
        # poll until everything is there (gauges come from the live service, so it keeps
        # serving meanwhile).
        deadline = time.monotonic() + 20
        missing: list[str] = ["no scrape yet"]
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        while missing and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                samples = _scrape(port)
            except OSError as e:  # the agent not listening (yet): keep polling
                missing = [f"no scrape: {e}"]
                continue
            missing = _missing(samples, job)
        assert coord.get(job).state == "succeeded", coord.get(job)
        assert not missing, (missing, sorted((k, v) for k, r in samples.items() for _, v in r))
    finally:
        stop.set()
        thread.join(timeout=60)
        conn.close()


# -- the dashboard ---------------------------------------------------------------------------

_NAME = re.compile(r"\b(ray_sapiens_stream_[a-z_]+)\b")


def _dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for var in board.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str):
            exprs.append(query)
    return exprs


def test_every_metric_the_dashboard_queries_is_one_the_code_defines() -> None:
    exprs = _dashboard_exprs()
    queried = {m for e in exprs for m in _NAME.findall(e)}
    defined = set(exported_names().values())
    assert queried, "the dashboard queries no sapiens_stream metric"
    assert queried <= defined, sorted(queried - defined)
    # and none the code defines is left off the dashboard
    assert defined <= queried, sorted(defined - queried)


def test_exported_names_follow_rays_prometheus_naming() -> None:
    names = exported_names()
    assert set(names) == set(METRICS)
    for name, (kind, _text, _tags) in METRICS.items():
        suffix = "_total" if kind == "counter" else ""
        assert names[name] == f"ray_sapiens_stream_{name}{suffix}"
