"""A result store is input too: ``render`` does not fetch a network URL that a store names as
its source; it asks for the video instead, and opens a URL only when it is passed explicitly."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.errors import SourceNotFoundError
from flows.render import render
from storage import FrameResult, StoreSpec, Writer
from tests.inputs.mjpeg import mjpeg_mkv

W, H = 64, 48


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_error(404)


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request path (and answers 404)."""
    requests: list[str] = []
    handler = type("Handler", (_Recorder,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()


def _store(path: Path, source_uri: str) -> Path:
    """A finished pose store of one frame without persons, recording ``source_uri``."""
    spec = StoreSpec(tasks=("pose",), num_keypoints=17, height=H, width=W, source_height=H,
                     source_width=W)  # fmt: skip
    writer = Writer.create(path, spec, job={"job_id": "render"}, source={"uri": source_uri})
    writer.add(
        FrameResult(
            index=0,
            source_index=0,
            pts=0,
            time_s=0.0,
            track_id=np.zeros(0, np.int64),
            box_xyxy=np.zeros((0, 4), np.float32),
            score=np.zeros(0, np.float32),
            keypoints_xy=np.zeros((0, 17, 2), np.float32),
            keypoint_score=np.zeros((0, 17), np.float32),
        )
    )
    writer.finalize()
    return path


@pytest.mark.parametrize("suffix", [".png", ".mp4"])
def test_render_does_not_fetch_a_url_named_by_the_store(
    tmp_path: Path, recording_server: tuple[str, list[str]], suffix: str
) -> None:
    base, requests = recording_server
    store = _store(tmp_path / "s.zarr", f"{base}/x.mp4")
    out = tmp_path / f"out{suffix}"
    with pytest.raises(SourceNotFoundError) as raised:
        render(store, out)
    message = str(raised.value)
    assert f"{base}/x.mp4" in message and "--source" in message and "\n" not in message
    assert requests == [] and not out.exists()
    # the caller's explicit choice is honoured: that URL is then opened (and answers 404)
    with pytest.raises(SourceNotFoundError, match="404"):
        render(store, out, source=f"{base}/x.mp4")
    assert requests == ["/x.mp4"]


def test_render_opens_a_local_source_named_by_the_store(tmp_path: Path) -> None:
    video = mjpeg_mkv(tmp_path / "my clip.mkv", [(W, H)] * 2)  # file URL: "my%20clip.mkv"
    for uri in (str(video), video.as_uri()):
        store = _store(tmp_path / f"{len(uri)}.zarr", uri)
        png = render(store, tmp_path / f"{len(uri)}.png", height=H)
        assert np.asarray(Image.open(png)).shape == (H, W, 3)
