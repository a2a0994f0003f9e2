"""Batch submit: which arguments name many videos, job ids derived from source and options,
manifests, and what a resubmit skips; against the embedded Redis-compatible server, no Ray."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.batch import expand_sources, is_batch, job_id_for, submit_many
from flows.cli import main
from flows.errors import SpecError
from flows.spec import JobSpec
from storage import Coordinator, EmbeddedServer, StoreSpec, Writer
from storage.synthetic import synthetic_frame

pytestmark = pytest.mark.redis


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    server = EmbeddedServer.ensure(tmp_path / "root")
    client = server.client()
    try:
        yield Coordinator(client)
    finally:
        client.close()
        server.stop()


def _id(source: str = "/v/walk 01.mp4", **raw: object) -> str:
    return job_id_for(JobSpec.from_dict({"source": source, "job_id": "x", **raw}))


def test_a_job_id_is_the_video_name_and_a_hash_of_source_and_options() -> None:
    base = _id()
    # Every option at its default: the hash is of the source alone, so options added later
    # with a default leave the ids of earlier submissions as they were.
    source_only = hashlib.sha256(b'{"source":"/v/walk 01.mp4"}').hexdigest()[:16]
    assert base == f"walk-01-{source_only}" == "walk-01-8bc341995e7bc2fb"
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", base)
    assert _id(priority=7) == base  # the queue's order changes no result
    assert _id(job_id="other") == base
    assert _id(sampling={"stride": 1}, model={"size": "tiny"}) == base  # defaults, spelt out
    assert _id(sampling={"stride": 2}) != base
    assert _id(tasks=["pose"]) != base
    assert _id(output_root="elsewhere") != base
    assert _id("/v/other/walk 01.mp4") != base
    signed = _id("https://h.example/b/clip.mp4?X-Amz-Signature=abc&X-Amz-Expires=60")
    assert signed.startswith("clip-")


@pytest.mark.parametrize(
    ("target", "many"),
    [
        ("DIR", True),
        ("DIR/*.mp4", True),
        ("DIR/**/clip?.mp4", True),
        ("list.jsonl", True),
        ("s3://bucket/videos/", True),
        ("s3://bucket/videos/*.mp4", True),
        ("DIR/a.mp4", False),
        ("s3://bucket/videos/a.mp4", False),
        ("https://h.example/a.mp4?sig=x*y", False),  # a presigned URL is one video
        ("rtsp://cam/stream?", False),
    ],
)
def test_what_names_many_videos(tmp_path: Path, target: str, many: bool) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x")
    assert is_batch(target.replace("DIR", str(tmp_path))) is many


def test_a_directory_lists_its_videos_by_name_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    for name in ("b.MP4", "a.mkv", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.mp4").write_bytes(b"x")
    assert [i.source for i in expand_sources(str(tmp_path))] == [
        str(tmp_path / "a.mkv"),
        str(tmp_path / "b.MP4"),
    ]
    assert [i.where for i in expand_sources(f"{tmp_path}/**/*.mp4")] == [
        str(tmp_path / "sub/c.mp4")
    ]
    with pytest.raises(SpecError, match=r"no video file \(\.3gp, .*\) found"):
        expand_sources(str(tmp_path / "sub" / "nothing*.avi"))


def test_manifest_lines_name_ids_and_options_and_bad_lines_fail_alone(
    coord: Coordinator, tmp_path: Path
) -> None:
    manifest = tmp_path / "m" / "list.jsonl"
    manifest.parent.mkdir()
    lines = [
        {"source": "clips/a.mp4", "job_id": "named-a"},
        {"source": "https://h.example/b.mp4", "sampling": {"stride": 3}},
        "not json {",
        {"path": "c.mp4"},
        "",
        {"source": "c.mp4", "sampling": {"stride": 0}},
    ]
    manifest.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    base = {"output_root": str(tmp_path / "out"), "sampling": {"stride": 2}, "tasks": ["pose"]}
    out = submit_many(coord, base, expand_sources(str(manifest)))
    (a, b) = out.queued
    assert a == {"job_id": "named-a", "source": str(manifest.parent / "clips" / "a.mp4")}
    assert b["source"] == "https://h.example/b.mp4" and b["job_id"].startswith("b-")
    assert coord.get("named-a").spec["sampling"]["stride"] == 2  # the command line's
    assert coord.get(b["job_id"]).spec["sampling"]["stride"] == 3  # the line's
    assert coord.get(b["job_id"]).spec["tasks"] == ["pose"]
    errors = [f["error"] for f in out.failed]
    assert errors[0].startswith(f"{manifest}:3: not JSON")
    assert errors[1] == f'{manifest}:4: expected an object with a "source" string'
    assert errors[2].startswith(f"{manifest}:6: ") and "stride" in errors[2]
    assert out.summary() == "queued 2, requeued 0, skipped 0, failed to queue 3"


def test_a_resubmit_skips_live_and_done_jobs_and_queues_cancelled_ones_again(
    coord: Coordinator, tmp_path: Path
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        (videos / name).write_bytes(b"x")
    base = {"output_root": str(tmp_path / "out")}
    items = expand_sources(str(videos))
    first = submit_many(coord, base, items[:2])
    assert [q["source"] for q in first.queued] == [str(videos / "a.mp4"), str(videos / "b.mp4")]
    coord.cancel(first.queued[1]["job_id"])
    # c.mp4 was analysed by `run` (no registry): its store is complete.
    c_id = job_id_for(JobSpec.from_dict({**base, "source": str(videos / "c.mp4"), "job_id": "x"}))
    spec = StoreSpec.for_source(48, 64, num_keypoints=17)
    writer = Writer.create(str(tmp_path / "out" / f"{c_id}.zarr"), spec, job={"job_id": c_id})
    writer.add(synthetic_frame(spec, 0, n_persons=1))
    writer.finalize()
    seen: list[int] = []
    again = submit_many(coord, base, items, on_item=lambda o: seen.append(o.handled))
    assert again.queued == [] and again.failed == [] and seen == [1, 2, 3]
    assert [(s["source"], s["state"]) for s in again.skipped] == [
        (str(videos / "a.mp4"), "queued"),
        (str(videos / "c.mp4"), "succeeded"),
    ]
    b_id = first.queued[1]["job_id"]
    assert again.requeued == [
        {"job_id": b_id, "source": str(videos / "b.mp4"), "state": "cancelled"}
    ]
    assert (coord.get(b_id).state, coord.get(b_id).retries) == ("queued", 1)
    assert (
        again.summary()
        == "queued 0, requeued 1, skipped 2 (1 queued, 1 succeeded), failed to queue 0"
    )
    third = submit_many(coord, base, items)  # b is queued now: nothing more to do
    assert [s["state"] for s in third.skipped] == ["queued", "queued", "succeeded"]
    assert third.requeued == [] and coord.get(b_id).retries == 1


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["submit", "DIR", "--job-id", "j"], "--job-id names one job; a batch derives each"),
        (["submit", "DIR", "--client-key", "k"], "--client-key names one job; a batch derives"),
        (["submit", "DIR", "--address", "http://h:8265"], "--address submits one video"),
        (["submit", "DIR/none-*.mp4"], "none-*.mp4: no video file"),
        (["wait"], "wait: give job ids or --all, not both nor neither"),
        (["status", "j", "--all"], "status: give job ids or --all, not both nor neither"),
    ],
)
def test_what_a_batch_or_a_multi_job_command_refuses_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    (tmp_path / "a.mp4").write_bytes(b"x")
    argv = [a.replace("DIR", str(tmp_path)) for a in argv]
    assert main([*argv, "--output-root", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and error in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before any server was started
