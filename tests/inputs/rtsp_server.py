"""A real RTSP server for the live-stream tests: GStreamer's gst-rtsp-server serving a live
H.264 test pattern on 127.0.0.1. Run by the system Python (``/usr/bin/python3``, which has the
``gi`` bindings), never imported by the project: ``rtsp_server.py PORT FPS``. It prints
``ready PORT`` once it listens and serves until it is killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate={fps}/1"
    " ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps}"
    " ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def main() -> None:
    port, fps = sys.argv[1], int(sys.argv[2])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(fps=fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
