"""Starting and stopping the real RTSP server of ``rtsp_server.py`` for the live tests.

The server runs under the system Python with GStreamer's RTSP server (Debian packages
``gir1.2-gst-rtsp-server-1.0``, ``gstreamer1.0-plugins-{base,good,ugly}``: ``.ci/run``
installs them). Where they are missing the tests skip, unless ``SAPIENS_STREAM_REQUIRE_RTSP``
is set (CI), where they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
_CHECK = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); assert all(Gst.ElementFactory.find(e) for e in ('videotestsrc', 'x264enc', 'rtph264pay'))"  # noqa: E501


def require_rtsp_server() -> None:
    """Skip (fail under CI) when the system Python cannot run GStreamer's RTSP server."""
    ok = os.path.exists(SYSTEM_PYTHON) and (
        subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, check=False).returncode
        == 0
    )
    if not ok:
        why = "GStreamer's RTSP server is not installed for /usr/bin/python3 (see .ci/run)"
        if os.environ.get("SAPIENS_STREAM_REQUIRE_RTSP"):
            pytest.fail(why)
        pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """One server process on ``port``; :meth:`stop` and :meth:`start` it on the same port."""

    def __init__(self, port: int, fps: int) -> None:
        self.port, self.fps = port, fps
        self.url = f"rtsp://127.0.0.1:{port}/live"
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(self.port), str(self.fps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._proc = proc
        began = time.monotonic()
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready PORT", or "" if it died
        if not line.startswith("ready"):
            self.stop()
            pytest.fail(f"the RTSP server did not start on port {self.port}: {line!r}")
        assert time.monotonic() - began < timeout_s

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


@contextmanager
def rtsp_server(fps: int = 10) -> Iterator[RtspServer]:
    """A running server on a free port, stopped at the end."""
    require_rtsp_server()
    server = RtspServer(free_port(), fps)
    server.start()
    try:
        yield server
    finally:
        server.stop()
