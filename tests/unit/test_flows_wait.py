"""``wait`` on several jobs: the totals it shows as jobs start, progress, fail and end, with
the frames each job will analyse read from its store; a fake clock, a non-TTY stream and the
embedded Redis-compatible server (the jobs' owner is played by the test, no Ray)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from flows.cmd_jobs import JobWatch
from flows.progress import LineDisplay
from flows.spec import JobSpec
from media import VideoInfo
from storage import Coordinator, EmbeddedServer, StoreSpec, Writer

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


def _store(url: Path, job_id: str, frames: int, stride: int) -> None:
    """The store a job's writer makes once the video is probed: its spec and the video's."""
    spec = JobSpec.from_dict({"source": "v.mp4", "job_id": job_id, "sampling": {"stride": stride}})
    info = VideoInfo(
        source="v.mp4", container="mp4", codec="h264", source_width=64, source_height=48,
        width=64, height=48, fps=25.0, time_base=Fraction(1, 12800), duration_s=frames / 25,
        frame_count_hint=frames, rotation=0, mirrored=False, time_source="pts", start_pts=0,
        seekable=True,
    )  # fmt: skip
    source = {"uri": "v.mp4", **info.to_dict()}
    job = {"job_id": job_id, "spec": spec.to_dict()}
    Writer.create(str(url), StoreSpec.for_source(48, 64, num_keypoints=17), job=job, source=source)


def test_wait_shows_jobs_done_frames_pace_eta_and_failures(
    coord: Coordinator, tmp_path: Path
) -> None:
    for job_id in ("a", "b", "c"):
        coord.submit({"source": "v.mp4"}, job_id=job_id, meta={"store": str(tmp_path / job_id)})
    now = [0.0]
    leases = {}

    def claim(job_id: str, frames: int = 0, stride: int = 1) -> None:
        lease = coord.claim("owner")
        assert lease is not None and lease.job_id == job_id
        leases[job_id] = lease
        if frames:
            _store(tmp_path / job_id, job_id, frames, stride)

    steps: list[Callable[[], None]] = [
        lambda: (claim("a", 100), coord.progress(leases["a"], committed_frames=20)),
        lambda: (coord.progress(leases["a"], committed_frames=60), claim("b", 100, stride=2)),
        lambda: coord.progress(leases["b"], committed_frames=10),
        lambda: (coord.complete(leases["a"]), coord.progress(leases["b"], committed_frames=30)),
        lambda: (claim("c"), coord.fail(leases["c"], "bad input")),
        lambda: (coord.progress(leases["b"], committed_frames=50), coord.complete(leases["b"])),
    ]

    def sleep(seconds: float) -> None:
        now[0] += 4.0  # the fake clock: each poll is 4 s after the one before
        steps.pop(0)()

    out = io.StringIO()
    watch = JobWatch(coord, ["a", "b", "c"], clock=lambda: now[0], sleep=sleep)
    assert watch.until_done(LineDisplay(out, clock=lambda: now[0], every_s=10)) is True
    # Totals: a job not yet probed counts as the mean of those that are (a: 100, b: 100 at
    # stride 2 = 50, c: 75 -> 225); an ended job counts what it committed (a ends at its
    # watermark 60, c at 0). The rate is over the whole 30 s window: 70 frames in 12 s.
    assert out.getvalue().splitlines() == [
        "wait: 0/3 jobs done, 0 running, 3 queued; 0 frames, 0s elapsed",
        "wait: 0/3 jobs done, 2 running, 1 queued; 70/225 frames, 5.8 frames/s, ETA 27s, "
        "12s elapsed",
        "wait: 1/3 jobs done, 1 running, 1 queued; 90/165 frames, 5.6 frames/s, ETA 13s, "
        "16s elapsed",  # a milestone: printed although the last line is 4 s old
        "wait: 2/3 jobs done, 1 running, 0 queued; 90/110 frames, 4.5 frames/s, ETA 4s, "
        "1 failed, 20s elapsed",
        "wait: 3/3 jobs done, 0 running, 0 queued; 110/110 frames, 4.6 frames/s, 1 failed, "
        "24s elapsed",
    ]
    assert {j: r.state for j, r in watch.records.items()} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "failed",
    }


def test_wait_gives_up_at_its_timeout(coord: Coordinator) -> None:
    coord.submit({"source": "v.mp4"}, job_id="stuck")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    watch = JobWatch(coord, ["stuck"], clock=lambda: now[0], sleep=sleep)
    out = io.StringIO()
    assert watch.until_done(LineDisplay(out, clock=lambda: now[0]), timeout_s=3) is False
    assert now[0] == pytest.approx(3.5)
