"""A job whose video and output root are on S3 runs through the service: JobService.serve (what
``sapiens-stream serve`` runs) in a thread, on the embedded Redis-compatible server and a local
Ray cluster whose pooled writer actors write the store to S3; it equals a local run of the same
spec. Against moto's S3 server (conftest.py), no network."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flows.cli import main
from flows.inline import run_inline
from flows.plan import plan_job
from flows.service import JobService
from flows.spec import JobSpec
from storage import Coordinator, connect, open_result
from tests.conftest import local_ray
from tests.inputs.generate import _write
from tests.integration.pipeline.test_run import _assert_same_store
from tests.integration.s3.conftest import S3

pytestmark = [pytest.mark.ray, pytest.mark.redis]

JOB = "s3-service-job"


@pytest.fixture(scope="module")
def ray_on_s3(s3: S3) -> Iterator[ModuleType]:
    """A local Ray cluster started after ``s3`` set the AWS variables: its workers inherit them
    and reach the moto server as they would reach S3."""
    with local_ray(4) as ray:
        yield ray


@contextmanager
def _serving(state: Path) -> Iterator[str]:
    """The service on the embedded server (its data under the local ``state``); yields the
    server's URL, which the commands need for an s3:// output root."""
    conn = connect(None, root=state)
    assert conn.server is not None
    coord, stop = Coordinator(conn.client), threading.Event()
    service = JobService(coord, max_jobs=2, worker_id="s3-serve")
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield conn.server.url
    finally:
        stop.set()
        thread.join(timeout=60)
        conn.close()


def _spec(source: str, root: str) -> dict[str, Any]:
    return {
        "source": source,
        "job_id": JOB,
        "output_root": root,
        "model": {"size": "tiny"},
        "tasks": ["pose", "seg"],
        "sampling": {"stride": 4},
        "batch_size": 4,
    }


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_served_job_reads_s3_and_writes_its_store_to_s3_like_a_local_run(
    s3: S3, ray_on_s3: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = _write(tmp_path / "clip.mp4", n=16)
    s3.fs.put(str(clip), "videos/service/clip.mp4")
    root, state = "s3://videos/service-results", tmp_path / "state"
    source = s3.url("service/clip.mp4")
    spec = json.dumps({k: v for k, v in _spec(source, root).items() if k != "source"})
    with _serving(state) as url:
        common = ("--output-root", root, "--redis-url", url)
        rc, out, err = _cli(capsys, "submit", source, "--spec-json", spec, *common)
        assert rc == 0, err
        assert out.strip() == JOB
        rc, out, err = _cli(capsys, "wait", JOB, *common, "--timeout", "120", "--quiet")
        assert rc == 0, out + err
        record = json.loads(out)
        assert (record["state"], record["committed_frames"]) == ("succeeded", 4), record
        # The service's pooled writer actor, a Ray worker process, wrote the store.
        named = [a["name"] for a in ray_on_s3.util.list_named_actors(all_namespaces=True)]
        assert any(n.startswith("sapiens-stream/pool/writer/") for n in named), named

    store = f"{root}/{JOB}.zarr"
    assert s3.fs.exists(f"videos/service-results/{JOB}.zarr/zarr.json")
    listed = s3.fs.find(f"videos/service-results/{JOB}.zarr")
    assert not Path("s3:").exists() and not (state / f"{JOB}.zarr").exists()
    assert not list(tmp_path.rglob("*.zarr"))  # nothing written locally

    served = open_result(store)
    assert (served.status, served.num_frames) == ("complete", 4)
    for layout in served.layout.arrays:  # every array is an object on S3
        assert f"videos/service-results/{JOB}.zarr/{layout.path}/zarr.json" in listed, layout
    assert served.attrs["source"]["uri"] == source
    local = run_inline(plan_job(JobSpec.from_dict(_spec(str(clip), str(tmp_path / "local")))))
    assert local.state == "succeeded", local.error
    ref = open_result(local.store_url)
    assert served.summary().tasks == ref.summary().tasks == ("pose", "seg")
    assert served.read_frames().source_index.tolist() == [0, 4, 8, 12]
    # Everything but where the video and the store are, when, how long, and the service's
    # fence token (a run outside the service has none) is the same.
    assert served.attrs["job"]["spec"]["output_root"] == root
    assert served.attrs["source"]["source"] == source
    assert _comparable(served.attrs) == _comparable(ref.attrs)
    _assert_same_store(store, local.store_url)


def _comparable(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: v
        for k, v in attrs.items()
        if k not in {"created_at", "finalized_at", "fence", "timings"}
    }
    out["job"] = {**attrs["job"], "spec": {**attrs["job"]["spec"]}}
    out["source"] = {k: v for k, v in attrs["source"].items() if k not in {"source", "uri"}}
    for key in ("source", "output_root"):
        del out["job"]["spec"][key]
    return out
