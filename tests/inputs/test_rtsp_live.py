"""Live RTSP streams against a real server (GStreamer's RTSP server, ``tests/inputs/rtsp.py``):
frames decoded with wall-clock times, a reconnect after the server restarts mid-stream, a
one-line failure when it never comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from actors.decode import DecodeSpec, DecodeWorker
from actors.errors import SourceUnreachableError
from actors.messages import FrameBatch
from tests.inputs.rtsp import RtspServer, rtsp_server

FPS = 10


@pytest.fixture
def server() -> Iterator[RtspServer]:
    with rtsp_server(fps=FPS) as s:
        yield s


def _worker(**extra: object) -> DecodeWorker:
    settings = {"batch_size": 4, "open_timeout_s": 3.0, "read_timeout_s": 2.0, **extra}
    return DecodeWorker(DecodeSpec(**settings))  # type: ignore[arg-type]


def _take(batches: Iterator[FrameBatch], n: int) -> list[FrameBatch]:
    out: list[FrameBatch] = []
    while sum(len(b) for b in out) < n:
        out.append(next(batches))
    return out


def test_rtsp_stream_decodes_frames_with_wall_clock_times(server: RtspServer) -> None:
    began = time.time()
    info, batches = _worker().open("live", server.url)
    got = _take(batches, 16)
    ended = time.time()
    batches.close()
    assert (info.codec, info.width, info.height, info.seekable) == ("h264", 160, 120, False)
    frames = np.concatenate([b.frames for b in got])
    index = np.concatenate([b.source_index for b in got])
    times = np.concatenate([b.time_s for b in got])
    np.testing.assert_array_equal(index, np.arange(len(index)))
    assert frames.shape[1:] == (120, 160, 3) and frames.std() > 10  # a moving ball, not black
    assert not np.array_equal(frames[0], frames[-1])
    assert began <= times[0] and times[-1] <= ended, (began, times, ended)  # Unix seconds
    steps = np.diff(times)
    assert np.all(steps >= 0)
    assert np.median(steps) == pytest.approx(1 / FPS, abs=0.02)  # stream spacing, not bunched


def test_rtsp_resume_numbers_frames_from_its_start_and_end_s_ends_the_stream(
    server: RtspServer,
) -> None:
    """A stream cannot be rewound: a resumed decode skips nothing (100 frames = 10 s here);
    ``end_s`` counts from the reader's first frame and ends the decode."""
    began = time.monotonic()
    _, batches = _worker(end_s=1.0).open("live", server.url, start_index=100)
    got = list(batches)
    assert time.monotonic() - began < 6.0
    index = np.concatenate([b.source_index for b in got])
    times = np.concatenate([b.time_s for b in got])
    np.testing.assert_array_equal(index, np.arange(100, 100 + len(index)))
    assert got[-1].is_last and 8 <= len(index) <= 12 and times[-1] - times[0] < 1.0


def test_rtsp_stream_reconnects_after_the_server_restarts(server: RtspServer) -> None:
    _, batches = _worker(reconnects=4, reconnect_backoff_s=0.25).open("live", server.url)
    before = _take(batches, 8)
    server.stop()
    stopped = time.time()
    restart = threading.Timer(0.5, server.start)
    restart.start()
    after: list[FrameBatch] = []  # the frames decoded before the drop, then the new ones
    try:
        while sum(int((b.time_s > stopped + 0.5).sum()) for b in after) < 8:
            after.append(next(batches))
            assert sum(len(b) for b in after) < 200, "no frame after the restart"
    finally:
        restart.join()
        batches.close()
    index = np.concatenate([b.source_index for b in before + after])
    times = np.concatenate([b.time_s for b in before + after])
    corrupt = np.concatenate([b.corrupt for b in before + after])
    assert np.all(np.diff(index) > 0), index  # one counter across connections
    assert np.all(np.diff(times) >= 0)
    late = times > stopped + 0.5  # frames of the new connection: after the restart
    assert not corrupt[late].all(), (times - stopped, corrupt)


def test_rtsp_stream_that_never_comes_back_fails_in_one_line(server: RtspServer) -> None:
    """(Its batches go out on a time bound: 8 frames at 2.5 fps would wait 3.2 s.)"""
    worker = _worker(
        batch_size=8, target_fps=2.5, live_batch_s=0.5, reconnects=2, reconnect_backoff_s=0.2
    )
    _, batches = worker.open("live", server.url)
    first = _take(batches, 4)
    assert all(0 < len(b) < 8 for b in first), [len(b) for b in first]
    server.stop()
    stopped = time.monotonic()
    with pytest.raises(SourceUnreachableError) as caught:
        for _ in batches:
            pass
    message = str(caught.value)
    assert time.monotonic() - stopped < 8.0
    assert f"live stream {server.url!r} did not come back after 2 reconnect attempts" in message
    assert "\n" not in message
