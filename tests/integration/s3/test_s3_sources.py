"""Videos in S3 are read like local files: same probe, same frames, exact resume seeks, the
same limits and one-line errors; and a job reads its video from S3 and writes its store there.
Against moto's S3 server with s3fs as the client (conftest.py), no network."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from flows.batch import expand_sources
from flows.errors import SpecError
from flows.inline import run_inline
from flows.plan import plan_job
from flows.spec import JobSpec
from media import (
    DecodeError,
    ResourceLimitError,
    SourceNotFoundError,
    SourceUnreachableError,
    UnreadableMediaError,
    VideoReader,
    probe_video,
)
from storage import open_result
from tests.inputs.generate import _write
from tests.integration.pipeline.test_run import _assert_same_store
from tests.integration.s3.conftest import S3, forget_clients, start_server

OPEN = {"threads": 1, "open_timeout_s": 5.0, "read_timeout_s": 5.0}


@pytest.fixture(scope="module")
def clip(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-frame H.264 MP4 (keyframe every 6 frames), locally and as s3://videos/clip.mp4."""
    path = _write(tmp_path_factory.mktemp("s3clip") / "clip.mp4", n=48)
    s3.fs.put(str(path), "videos/clip.mp4")
    return path


def _frames(source: str, info, **kw) -> list[tuple[int, np.ndarray]]:
    return [(f.index, f.rgb()) for f in VideoReader(source, info, threads=1, **kw)]


def test_an_s3_video_probes_and_decodes_like_the_local_file(s3: S3, clip: Path) -> None:
    remote = probe_video(s3.url("clip.mp4"), max_side=None, **OPEN)
    local = probe_video(str(clip), max_side=None, **OPEN)
    assert remote == replace(local, source=s3.url("clip.mp4"))
    assert remote.seekable  # pts-numbered H.264 in MP4: resumes may seek
    got, want = _frames(s3.url("clip.mp4"), remote), _frames(str(clip), local)
    assert [i for i, _ in got] == list(range(48)) == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert np.array_equal(a, b)


def test_a_resume_on_s3_seeks_to_a_keyframe_and_equals_the_local_frames(
    s3: S3, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = probe_video(s3.url("clip.mp4"), max_side=None, **OPEN)
    with caplog.at_level(logging.DEBUG, logger="media._feed"):
        got = _frames(s3.url("clip.mp4"), info, start_index=20)
    seek = re.search(r"s3://videos/clip.mp4: seeked to keyframe at decode index (\d+)", caplog.text)
    assert seek is not None and 0 < int(seek.group(1)) <= 20  # not decoded from 0
    want = _frames(str(clip), probe_video(str(clip), max_side=None, **OPEN))[20:]
    assert [i for i, _ in got] == list(range(20, 48))
    for (_, a), (_, b) in zip(got, want, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("key", "body", "error", "match"),
    [
        ("missing.mp4", None, SourceNotFoundError, "no such object or bucket"),
        ("prefix/", None, SourceNotFoundError, "names a prefix"),
        ("empty.mp4", b"", UnreadableMediaError, "object is empty"),
        ("text.mp4", b"not a video\n" * 200, UnreadableMediaError, "expected a media container"),
    ],
)
def test_s3_failures_are_one_line_naming_the_url(
    s3: S3, key: str, body: bytes | None, error: type[DecodeError], match: str
) -> None:
    if key == "prefix/":
        s3.fs.pipe("videos/prefix/inside.mp4", b"x")
    elif body is not None:
        s3.fs.pipe(f"videos/{key}", body)
    with pytest.raises(error, match=match) as caught:
        probe_video(s3.url(key), max_side=None, **OPEN)
    text = str(caught.value)
    assert s3.url(key) in text and "\n" not in text


def test_a_missing_bucket_is_not_found(s3: S3) -> None:
    with pytest.raises(SourceNotFoundError, match=r"s3://no-such-bucket/clip\.mp4"):
        probe_video("s3://no-such-bucket/clip.mp4", max_side=None, **OPEN)


def test_the_pixel_limit_holds_for_s3_videos(s3: S3, clip: Path) -> None:
    with pytest.raises(ResourceLimitError, match=r"s3://videos/clip\.mp4"):
        probe_video(s3.url("clip.mp4"), max_side=None, max_pixels=64 * 47, **OPEN)


def test_a_store_that_does_not_answer_fails_in_seconds(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, endpoint = start_server()
    server.stop()  # a port that refuses
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    forget_clients()
    began = time.monotonic()
    try:
        with pytest.raises(SourceUnreachableError, match="object store did not answer"):
            probe_video(s3.url("clip.mp4"), max_side=None, **OPEN)
    finally:
        forget_clients()
    assert time.monotonic() - began < 10


def test_a_store_that_stops_answering_mid_video_fails_as_unreachable(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    noise = tmp_path / "noise.mp4"  # incompressible: ~0.1 MB per frame, read frame by frame
    rng = np.random.default_rng(0)
    with av.open(str(noise), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for _ in range(12):
            image = rng.integers(0, 256, (96, 128, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    s3.fs.put(str(noise), "videos/noise.mp4")
    server, endpoint = start_server()  # moto keeps its buckets per process: same objects
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setattr("media._remote.BLOCK_BYTES", 4096)  # a request per 4 KiB read
    # Retries as in production would add seconds; what is tested is what the failure becomes.
    monkeypatch.setattr("s3fs.S3FileSystem.retries", 1)
    monkeypatch.setattr("media._remote._S3_ATTEMPTS", 1)
    forget_clients()
    try:
        info = probe_video(s3.url("noise.mp4"), max_side=None, **OPEN)
        frames = iter(VideoReader(s3.url("noise.mp4"), info, threads=1, seek=False))
        assert next(frames).index == 0
        server.stop()
        with pytest.raises(SourceUnreachableError, match=r"noise.mp4' stopped answering: "):
            for _ in frames:
                pass
    finally:
        forget_clients()


def test_a_job_reads_its_video_from_s3_and_writes_its_store_to_s3(
    s3: S3, clip: Path, tmp_path: Path
) -> None:
    def spec(source: str, root: str) -> JobSpec:
        return JobSpec.from_dict(
            {
                "source": source,
                "job_id": "s3-job",
                "output_root": root,
                "sampling": {"stride": 4},
                "batch_size": 4,
            }
        )

    out = run_inline(plan_job(spec(s3.url("clip.mp4"), "s3://videos/results")))
    assert (out.state, out.frames) == ("succeeded", 12)
    assert out.store_url == "s3://videos/results/s3-job.zarr"
    assert s3.fs.exists("videos/results/s3-job.zarr/zarr.json")
    reader = open_result(out.store_url)
    assert reader.status == "complete" and reader.attrs["source"]["uri"] == s3.url("clip.mp4")
    local = run_inline(plan_job(spec(str(clip), str(tmp_path))))
    _assert_same_store(out.store_url, local.store_url)


def test_a_batch_lists_the_videos_of_an_s3_prefix_or_glob(s3: S3) -> None:
    for key in ("batch/b.mp4", "batch/a.MOV", "batch/notes.txt", "batch/sub/c.mp4"):
        s3.fs.pipe(f"videos/{key}", b"x")
    listed = [i.source for i in expand_sources("s3://videos/batch/")]
    assert listed == ["s3://videos/batch/a.MOV", "s3://videos/batch/b.mp4"]
    globbed = [i.source for i in expand_sources("s3://videos/batch/**/*.mp4")]
    assert globbed == ["s3://videos/batch/b.mp4", "s3://videos/batch/sub/c.mp4"]
    with pytest.raises(SpecError, match="no video file"):
        expand_sources("s3://videos/batch/none-*.mp4")
