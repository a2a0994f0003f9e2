"""`query`/`export` find a job's store through the job registry (the embedded Redis-compatible
server of the output root), as `status` does, and fall back to <output-root>/<job_id>.zarr."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli import main
from flows.exports import resolve_store
from storage import Coordinator, RedisConnection, StoreSpec, Writer, connect
from storage.synthetic import synthetic_frame

pytestmark = pytest.mark.redis


def _store(path: Path) -> str:
    spec = StoreSpec.for_source(24, 32, num_keypoints=17, tasks=("pose", "seg"))
    w = Writer.create(str(path), spec, job={"job_id": path.stem})
    for i in range(3):
        w.add(synthetic_frame(spec, i, n_persons=1))
    w.finalize()
    return str(path)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, RedisConnection]]:
    root = tmp_path / "results"
    root.mkdir()
    with connect(None, root=root, detach=False) as conn:  # the root's embedded server
        yield str(root), conn


def test_a_job_id_resolves_to_the_store_its_submit_recorded(
    registry: tuple[str, RedisConnection],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SAPIENS_STREAM_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    root, conn = registry
    elsewhere = _store(tmp_path / "elsewhere" / "clip.zarr")  # not under the output root
    coord = Coordinator(conn.client)
    coord.submit({"source": "clip.mp4"}, job_id="queued", meta={"store": elsewhere})
    coord.submit({"source": "clip.mp4"}, job_id="bare")  # recorded no store
    _store(Path(root) / "bare.zarr")
    _store(Path(root) / "ran.zarr")  # a `run` job: the registry never saw it
    assert resolve_store("queued", output_root=root) == elsewhere
    assert resolve_store("bare", output_root=root) == f"{root}/bare.zarr"
    assert resolve_store("ran", output_root=root) == f"{root}/ran.zarr"
    assert main(["query", "queued", "--frame", "1", "--output-root", root]) == 0
    assert json.loads(capsys.readouterr().out)["store"] == elsewhere
    out = tmp_path / "q.json"
    argv = ["export", "queued", "--format", "coco", "--out", str(out), "--output-root", root]
    assert main(argv) == 0
    assert capsys.readouterr().err.startswith("export coco: wrote 3 frames, 3 persons")
    assert main(["query", "never", "--output-root", root]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no job or store 'never'" in err
