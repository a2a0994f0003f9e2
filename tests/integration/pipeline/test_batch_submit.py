"""Many videos through one service: ``submit DIR`` queues a job per video and a resubmit
queues nothing twice; ``wait`` follows them all with progress; every job's COCO export loads
in pycocotools. The commands run as the CLI's ``main``; the service is JobService.serve (what
``sapiens-stream serve`` runs) in a thread, on the embedded Redis-compatible server and a local
Ray cluster."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.cli import main
from flows.service import JobService
from storage import Coordinator, connect, open_result
from tests.inputs.generate import _write

pytestmark = [pytest.mark.ray, pytest.mark.redis]

VIDEOS, FRAMES = 20, 8  # 8 frames at 25 fps: 0.32 s each
LONG = 240  # frames of the video whose job is cancelled midway


@contextmanager
def _serving(root: Path) -> Iterator[Coordinator]:
    conn = connect(None, root=root)  # no URL: the embedded server the commands use too
    coord, stop = Coordinator(conn.client), threading.Event()
    service = JobService(coord, max_jobs=8, worker_id="batch-serve")
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield coord
    finally:
        stop.set()
        thread.join(timeout=60)
        conn.close()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_directory_of_videos_is_queued_once_waited_for_and_exported(
    ray_cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos, root = tmp_path / "videos", tmp_path / "results"
    videos.mkdir()
    for i in range(VIDEOS):
        _write(videos / f"clip{i:02d}.mp4", n=FRAMES)
    (videos / "notes.txt").write_text("not a video")
    common = ("--output-root", str(root), "--batch-size", "4", "--tasks", "pose")
    with _serving(root):
        rc, out, err = _cli(capsys, "submit", str(videos), *common)
        assert rc == 0, err
        first = json.loads(out)
        ids = [q["job_id"] for q in first["queued"]]
        assert len(set(ids)) == VIDEOS and first["skipped"] == first["failed"] == []
        assert [q["source"] for q in first["queued"]] == [
            str(videos / f"clip{i:02d}.mp4") for i in range(VIDEOS)
        ]
        assert err.splitlines()[-1] == "submit: queued 20, requeued 0, skipped 0, failed to queue 0"
        # At once again: every video's job is there (queued, running or done), none is added.
        rc, out, err = _cli(capsys, "submit", str(videos), *common)
        again = json.loads(out)
        assert rc == 0 and again["queued"] == [] and again["failed"] == []
        assert [s["job_id"] for s in again["skipped"]] == ids

        rc, out, err = _cli(capsys, "wait", *ids, "--output-root", str(root), "--timeout", "300")
        assert rc == 0, err
        records = json.loads(out)
        assert [r["state"] for r in records] == ["succeeded"] * VIDEOS
        assert all(r["committed_frames"] == FRAMES for r in records)
        lines = err.splitlines()  # not a terminal: plain progress lines, the last one complete
        assert lines and all(line.startswith("wait: ") for line in lines)
        total = VIDEOS * FRAMES
        assert lines[-1].startswith(f"wait: 20/20 jobs done, 0 running, 0 queued; {total}/{total}")
        assert " frames/s" in err

        # Done jobs are skipped; only a new video is queued.
        _write(videos / "clip20.mp4", n=FRAMES)
        rc, out, err = _cli(capsys, "submit", str(videos), *common, "--quiet")
        third = json.loads(out)
        assert rc == 0 and [s["state"] for s in third["skipped"]] == ["succeeded"] * VIDEOS
        assert [q["source"] for q in third["queued"]] == [str(videos / "clip20.mp4")]
        assert err == "submit: queued 1, requeued 0, skipped 20 (20 succeeded), failed to queue 0\n"
        rc, out, err = _cli(capsys, "wait", "--all", "--output-root", str(root), "--quiet")
        assert rc == 0 and [r["job_id"] for r in json.loads(out)] == [third["queued"][0]["job_id"]]
        assert err == ""
        rc, out, _ = _cli(capsys, "status", "--all", "--output-root", str(root))
        assert sorted(r["job_id"] for r in json.loads(out)) == sorted([*ids, *[
            q["job_id"] for q in third["queued"]]])  # fmt: skip

    from pycocotools.coco import COCO

    for job_id in ids:
        results, images = tmp_path / f"{job_id}.json", tmp_path / f"{job_id}.images.json"
        rc, _, err = _cli(
            capsys, "export", job_id, "--format", "coco", "--coco-17", "--out", str(results),
            "--images-json", str(images), "--output-root", str(root),
        )  # fmt: skip
        assert rc == 0, err
        gt = COCO(str(images))
        dt = gt.loadRes(str(results))
        assert sorted(gt.getImgIds()) == list(range(FRAMES))
        assert len(dt.getAnnIds()) == open_result(root / f"{job_id}.zarr").summary().persons
        capsys.readouterr()  # pycocotools prints its timings


def test_a_resubmit_queues_a_cancelled_job_again_which_continues_its_store(
    ray_cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The batch's failed or cancelled jobs are queued again on a resubmit: the store the
    first run left (failed, with committed frames) is reopened and finished, not restarted."""
    videos, root = tmp_path / "videos", tmp_path / "results"
    videos.mkdir()
    _write(videos / "long.mp4", n=LONG)
    common = ("--output-root", str(root), "--batch-size", "4", "--tasks", "pose", "--quiet")
    with _serving(root) as coord:
        rc, out, err = _cli(capsys, "submit", str(videos), *common)
        assert rc == 0, err
        job_id = json.loads(out)["queued"][0]["job_id"]
        store = root / f"{job_id}.zarr"
        deadline = time.monotonic() + 120
        while coord.get(job_id).committed_frames < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert coord.cancel(job_id) == "running"
        while not coord.get(job_id).finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert coord.get(job_id).state == "cancelled"
        first = open_result(store)
        kept = first.num_frames
        assert first.status == "failed" and 8 <= kept < LONG, (first.status, kept)

        rc, out, err = _cli(capsys, "submit", str(videos), *common)
        again = json.loads(out)
        assert rc == 0 and again["queued"] == again["skipped"] == []
        assert again["requeued"] == [
            {"job_id": job_id, "source": str(videos / "long.mp4"), "state": "cancelled"}
        ]
        assert err == "submit: queued 0, requeued 1, skipped 0, failed to queue 0\n"
        rc, out, err = _cli(capsys, "wait", job_id, "--output-root", str(root), "--timeout", "120")
        assert rc == 0, err
        record = json.loads(out)
        assert (record["state"], record["retries"], record["committed_frames"]) == (
            "succeeded",
            1,
            LONG,
        )
    done = open_result(store)
    assert (done.status, done.num_frames, done.attrs["retries"]) == ("complete", LONG, 1)
    frames = done.read_frames()
    assert list(frames.source_index) == list(range(LONG)) and frames.ok.all()
