"""Malformed and unusual video inputs, written at test time with PyAV and plain file writes.

``generate(root, net)`` writes every case under ``root`` and returns them as :class:`Case`
records: a name, the source (path or URL), and the expected outcome at the decode stage:

* an error: the :mod:`actors.errors` type and a pattern its message must match (the message
  must also name the source);
* frames: how many frames are delivered, how many decoder slots the file holds (delivered +
  counted as corrupt), the (H, W) of the frames and, where the pixels are known, the expected
  upright images.

Every file is a few frames at a small size, so the whole set is written in well under a second.
The network cases need the servers of :class:`NetworkServers`, which the caller keeps running.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from actors.errors import (
    DecodeError,
    NoVideoStreamError,
    ResourceLimitError,
    SourceNotFoundError,
    SourceUnreachableError,
    UnreadableMediaError,
)
from tests.inputs.mjpeg import mjpeg_mkv

__all__ = ["Case", "NetworkServers", "clip_bytes", "generate", "image", "network_servers"]

W, H = 64, 48  # size of the regular clips
N = 24  # frames of the regular clips
GOP = 6
VFR_MS = [0, 40, 45, 300, 310, 900]
H264 = "libx264"  # the damaged cases count on its GOP layout (closed GOPs of 6, 2 B-frames)


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One input and its expected decode outcome.

    Args:
        name: short identifier (test ids, job ids).
        source: local path or URL handed to the decoder.
        what: one line saying what is wrong or unusual about it.
        error: expected error type, or None when frames are expected.
        match: regex the error message must contain.
        frames: frames delivered at stride 1 by a one-thread decoder (None: error expected);
            with frame threads, damaged input may deliver fewer and count the rest as corrupt.
        slots: frames the file holds: delivered + counted as corrupt, however many decoder
            threads (default: ``frames``).
        corrupt: whether some frames are damaged and must be counted as corrupt.
        shape: (H, W) of the delivered frames.
        reference: expected upright RGB frames (F, H, W, 3), compared by mean absolute error
            with the delivered frames, or by display position with those before ``intact``.
        intact: on damaged input, the frames shown before this position (counted from pts)
            are undamaged.
        tolerance: largest mean absolute error against ``reference``.
        rotation: expected ``VideoInfo.rotation``.
        times: expected ``time_s`` of the delivered frames, when they matter.
        spec: ``DecodeSpec`` overrides for the decode-level test (short network timeouts).
        service: part of the end-to-end run through the job service.
        max_seconds: longest the decode-level outcome may take.
        max_bytes: largest size of the written file (inputs are kept small).
    """

    name: str
    source: str
    what: str
    error: type[DecodeError] | None = None
    match: str = ""
    frames: int | None = None
    slots: int | None = None
    corrupt: bool = False
    shape: tuple[int, int] | None = None
    reference: np.ndarray | None = field(default=None, repr=False)
    intact: int | None = None
    tolerance: float = 12.0
    rotation: int = 0
    times: tuple[float, ...] | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    service: bool = True
    max_seconds: float = 10.0
    max_bytes: int = 64 * 1024

    @property
    def expected_slots(self) -> int | None:
        return self.frames if self.slots is None else self.slots


def image(i: int, width: int = W, height: int = H) -> np.ndarray:
    """(H, W, 3) RGB: white top-left quadrant (orientation marker), green level encoding ``i``."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: max(1, height // 2), : max(1, width // 2)] = 255
    img[height // 2 :, :, 1] = (40 + i * 20) % 250
    return img


def _write(
    path: Path,
    *,
    codec: str = H264,
    width: int = W,
    height: int = H,
    n: int = N,
    pix_fmt: str = "yuv420p",
    fmt: str | None = None,
    opts: dict[str, str] | None = None,
    container_opts: dict[str, str] | None = None,
    pts_ms: list[int] | None = None,
    rotation: int | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    with av.open(str(path), "w", format=fmt, options=container_opts or {}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == H264:
            stream.options = {"g": str(GOP), "bf": "2", **(opts or {})}
        elif opts:
            stream.options = opts
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if metadata:
            stream.metadata.update(metadata)
        for i in range(n if pts_ms is None else len(pts_ms)):
            frame = av.VideoFrame.from_ndarray(image(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _images(n: int = N, width: int = W, height: int = H) -> np.ndarray:
    return np.stack([image(i, width, height) for i in range(n)])


def _packets(path: Path) -> list[tuple[int, int]]:
    """(byte position, size) of the video packets, in file order."""
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(video=0) if p.size]


def _overwrite(path: Path, out: Path, which: list[int]) -> Path:
    """``path`` with the payload of packets ``which`` overwritten (their 4-byte length kept)."""
    data = bytearray(path.read_bytes())
    packets = _packets(path)
    for k in which:
        pos, size = packets[k]
        data[pos + 4 : pos + size] = b"\xa5" * (size - 4)
    out.write_bytes(bytes(data))
    return out


def _silence(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 16000
        out.mux([*stream.encode(frame), *stream.encode()])
    return path


def _cover_art_only(path: Path) -> Path:
    """An audio file whose only picture is a cover (attached picture disposition)."""
    with av.open(str(path), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=16000)
        cover = out.add_stream("png")
        cover.width, cover.height, cover.pix_fmt = 16, 16, "rgb24"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(image(0, 16, 16), format="rgb24")
        out.mux([*cover.encode(picture), *cover.encode()])
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        sound.sample_rate = 16000
        out.mux([*audio.encode(sound), *audio.encode()])
    return path


def _multi_video(path: Path) -> Path:
    """Two video streams: 64x48 first, a 32x32 one second (the first must be decoded)."""
    with av.open(str(path), "w") as out:
        first = out.add_stream(H264, rate=25)
        first.width, first.height, first.pix_fmt = W, H, "yuv420p"
        second = out.add_stream(H264, rate=25)
        second.width, second.height, second.pix_fmt = 32, 32, "yuv420p"
        for i in range(8):
            small = av.VideoFrame.from_ndarray(image(i, 32, 32)[:, ::-1].copy(), format="rgb24")
            out.mux(second.encode(small))
            out.mux(first.encode(av.VideoFrame.from_ndarray(image(i), format="rgb24")))
        out.mux(first.encode())
        out.mux(second.encode())
    return path


def _no_frames(path: Path) -> Path:
    """An AVI whose header declares a video stream that holds no frame at all."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj420p"
        out.start_encoding()
    return path


def _huge_sof(path: Path, side: int, *, n: int = 4, first: int = 0) -> Path:
    """An MJPEG AVI of ``n`` frames whose JPEG headers (SOF0) from frame ``first`` on claim
    ``side`` x ``side`` pixels."""
    data = bytearray(_write(path, codec="mjpeg", pix_fmt="yuvj420p", n=n).read_bytes())
    at, k = data.find(b"\xff\xc0"), 0
    while at >= 0:
        if k >= first:
            data[at + 5 : at + 9] = struct.pack(">HH", side, side)  # height, width
        at, k = data.find(b"\xff\xc0", at + 2), k + 1
    path.write_bytes(bytes(data))
    return path


def _resolution_change(path: Path) -> Path:
    """An MJPEG AVI whose frames 3-5 are coded at 32x24 after three at 64x48."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj420p"
        small = av.CodecContext.create("mjpeg", "w")
        small.width, small.height, small.pix_fmt = W // 2, H // 2, "yuvj420p"
        small.time_base = Fraction(1, 25)
        for i in range(6):
            if i < 3:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(image(i), format="rgb24")))
                continue
            frame = av.VideoFrame.from_ndarray(image(i, W // 2, H // 2), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in small.encode(frame):
                packet.stream, packet.time_base = stream, Fraction(1, 25)
                packet.pts = packet.dts = i
                out.mux(packet)
        out.mux(stream.encode())
    return path


def _huge_avi_header(path: Path, side: int) -> Path:
    """An MJPEG AVI whose AVI headers (avih, strf) claim ``side`` x ``side``; frames are 64x48."""
    data = bytearray(_write(path, codec="mjpeg", pix_fmt="yuvj420p", n=4).read_bytes())
    avih = data.find(b"avih")
    data[avih + 40 : avih + 48] = struct.pack("<II", side, side)  # dwWidth, dwHeight
    strf = data.find(b"strf")
    data[strf + 12 : strf + 20] = struct.pack("<ii", side, side)  # biWidth, biHeight
    path.write_bytes(bytes(data))
    return path


# -- network -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkServers:
    """Local endpoints of the network cases."""

    closed_port: int  # bound by nobody: connections are refused
    silent_port: int  # accepts connections and never sends a byte
    http_base: str  # serves /clip.mkv, /missing.mp4 (404) and /stall.mkv (stops mid-body)


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if not self.path.endswith(".mkv"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.path.startswith("/stall"):
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            time.sleep(120)  # the client gives up long before
            return
        self.wfile.write(self.body)


class _HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@contextmanager
def network_servers(body: bytes) -> Iterator[NetworkServers]:
    """Run the servers of the network cases until the block ends; ``body`` is the clip served."""
    with socket.socket() as probe:  # bound, then released: nobody listens there afterwards
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(silent.accept()[0])
            except OSError:
                return

    handler = type("Handler", (_Handler,), {"body": body})
    web = _HTTPServer(("127.0.0.1", 0), handler)
    threads = [
        threading.Thread(target=accept, daemon=True),
        threading.Thread(target=web.serve_forever, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield NetworkServers(closed, silent.getsockname()[1], f"http://127.0.0.1:{web.server_port}")
    finally:
        web.shutdown()
        web.server_close()
        silent.close()
        for conn in held:
            conn.close()


# -- the cases -----------------------------------------------------------------------------------


def generate(root: Path, net: NetworkServers | None = None) -> list[Case]:
    """Write every case under ``root`` (created if needed); network cases need ``net``."""
    root.mkdir(parents=True, exist_ok=True)
    good = _write(root / "good.mkv")
    plain = Case(name="plain_clip", source=str(good), what="a valid clip (the control)",
                 frames=N, shape=(H, W), reference=_images(), service=False)  # fmt: skip
    cases = [
        plain, *_unreadable(root, good), *_damaged(root, good), *_unusual(root), *_over_limits(root)
    ]  # fmt: skip
    if net is not None:
        cases += _network(net)
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def clip_bytes(root: Path) -> bytes:
    """The regular clip the network cases serve."""
    return _write(root / "served.mkv").read_bytes()


def _cut(path: Path, out: Path, size: int) -> Path:
    out.write_bytes(path.read_bytes()[:size])
    return out


def _unreadable(root: Path, good: Path) -> list[Case]:
    """Inputs that must fail with a specific error naming the source."""
    mp4 = _write(root / "moov_last.mp4")  # the index (moov) is written after the frames
    mp4_data = mp4.read_bytes()
    moov = mp4_data.rfind(b"moov") - 4
    text = root / "text.mp4"
    text.write_text("this is a plain text file, not a video\n" * 40)
    zero = root / "zero.mp4"
    zero.write_bytes(b"")
    giant = root / "giant_header.y4m"
    giant.write_bytes(b"YUV4MPEG2 W30000 H30000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 4096)
    unknown = root / "unknown_codec.avi"
    mjpeg_avi = _write(root / "mjpeg_for_fourcc.avi", codec="mjpeg", pix_fmt="yuvj420p", n=3)
    unknown.write_bytes(mjpeg_avi.read_bytes().replace(b"MJPG", b"QQQQ"))
    all_bad = _overwrite(good, root / "all_packets_overwritten.mkv", list(range(N)))
    directory = root / "a_directory.mp4"
    directory.mkdir()
    return [
        Case(name="zero_bytes", source=str(zero), what="an empty file",
             error=UnreadableMediaError, match="empty"),
        Case(name="text_renamed_mp4", source=str(text), what="a text file named .mp4",
             error=UnreadableMediaError, match="cannot open video"),
        Case(name="truncated_in_header_mkv", source=str(_cut(good, root / "head.mkv", 64)),
             what="an MKV cut inside its header", error=UnreadableMediaError,
             match="cannot open video"),
        Case(name="truncated_before_index_mp4",
             source=str(_cut(mp4, root / "no_index.mp4", len(mp4_data) // 2)),
             what="an MP4 cut before its index (moov at the end)", error=UnreadableMediaError,
             match="cannot open video"),
        Case(name="truncated_inside_index_mp4",
             source=str(_cut(mp4, root / "half_index.mp4", moov + 200)),
             what="an MP4 cut inside its index: the video track is not described",
             error=NoVideoStreamError, match="no video stream.*truncated"),
        Case(name="truncated_in_first_frame_mkv",
             source=str(_cut(good, root / "first_frame.mkv", _packets(good)[0][0] + 100)),
             what="an MKV cut inside its first frame", error=UnreadableMediaError,
             match="no frame"),
        Case(name="no_frames_avi", source=str(_no_frames(root / "no_frames.avi")),
             what="an AVI with a video stream and no frame", error=UnreadableMediaError,
             match="no frame"),
        Case(name="audio_only", source=str(_silence(root / "audio_only.m4a")),
             what="an audio-only file", error=NoVideoStreamError,
             match="no video stream.*audio"),
        Case(name="cover_art_only", source=str(_cover_art_only(root / "cover_only.m4a")),
             what="audio plus a cover picture, no video", error=NoVideoStreamError,
             match="no video stream.*cover"),
        Case(name="unknown_codec_avi", source=str(unknown),
             what="an AVI whose video codec tag is unknown", error=UnreadableMediaError,
             match="codec"),
        Case(name="all_packets_overwritten", source=str(all_bad),
             what="an MKV whose every packet is garbage", error=UnreadableMediaError,
             match="no decodable video frame"),
        Case(name="huge_declared_y4m", source=str(giant),
             what="a Y4M header declaring 30000x30000", error=UnreadableMediaError,
             match="cannot open video"),
        Case(name="huge_declared_jpeg", source=str(_huge_sof(root / "huge_sof.avi", 30000)),
             what="MJPEG frames whose JPEG headers declare 30000x30000",
             error=UnreadableMediaError, match="no decodable video frame"),
        Case(name="missing_file", source=str(root / "does_not_exist.mp4"),
             what="a path that does not exist", error=SourceNotFoundError, match="no such file"),
        Case(name="directory", source=str(directory), what="a directory named .mp4",
             error=SourceNotFoundError, match="not a regular file"),
        Case(name="unsupported_scheme", source="nosuchproto://example/clip.mp4",
             what="a URL scheme FFmpeg has no protocol for", error=UnreadableMediaError,
             match="protocol"),
    ]  # fmt: skip


def _damaged(root: Path, good: Path) -> list[Case]:
    """Inputs with some damage: the frames that decode come out, the rest is counted."""
    data = good.read_bytes()
    packets = _packets(good)
    mid_cut = packets[3 * N // 4][0] + 10  # inside packet 18 (decode order); 0-17 are whole
    faststart = _write(root / "faststart.mp4", container_opts={"movflags": "faststart"})
    fs_packets = _packets(faststart)
    fs_cut = fs_packets[N // 2][0] + 10
    tail = root / "garbage_appended.mkv"
    tail.write_bytes(data + np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    return [
        # Matroska drops the cut block: the frames before it come out, nothing is corrupt.
        Case(name="truncated_mid_stream_mkv", source=str(_cut(good, root / "cut.mkv", mid_cut)),
             what="an MKV cut in the middle of its frames", frames=3 * N // 4, shape=(H, W),
             reference=_images(3 * N // 4)),
        # MP4 hands over the cut packet: it fails to decode and is counted.
        Case(name="truncated_mid_stream_mp4",
             source=str(_cut(faststart, root / "cut_faststart.mp4", fs_cut)),
             what="an MP4 (index first) cut in the middle of its frames", frames=N // 2,
             slots=N // 2 + 1, corrupt=True, shape=(H, W), reference=_images(),
             intact=N // 2),
        # Closed GOPs of 6: the damage stays inside the GOP of the damaged packets.
        Case(name="corrupt_packets_mid_stream",
             source=str(_overwrite(good, root / "corrupt_mid.mkv", [8, 9, 10])),
             what="three packets mid-stream overwritten with garbage", frames=N - 3, slots=N,
             corrupt=True, shape=(H, W), reference=_images(), intact=GOP),
        Case(name="corrupt_last_packet",
             source=str(_overwrite(good, root / "corrupt_last.mkv", [N - 1])),
             what="the last packet overwritten with garbage", frames=N - 1, slots=N,
             corrupt=True, shape=(H, W), reference=_images(), intact=N - GOP),
        Case(name="huge_declared_mid_stream",
             source=str(_huge_sof(root / "huge_sof_late.avi", 30000, n=6, first=3)),
             what="MJPEG frames 3-5 declaring 30000x30000 in their JPEG headers", frames=3,
             slots=6, corrupt=True, shape=(H, W), reference=_images(6), intact=3),
        Case(name="garbage_appended", source=str(tail), what="4 KiB of random bytes after the end",
             frames=N, shape=(H, W), reference=_images(), service=False),
    ]  # fmt: skip


def _unusual(root: Path) -> list[Case]:
    """Valid but unusual inputs: every frame comes out, upright and in RGB. The ones that differ
    from a plain clip only inside the decoder (pixel format, container) skip the service run."""
    ref = _images()
    upright = np.rot90(ref, k=1, axes=(1, 2))  # 90 degrees counter-clockwise
    gray = ref.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    gray = np.repeat(gray[..., None], 3, axis=-1).round().astype(np.uint8)
    odd = np.stack([image(i, 33, 17) for i in range(6)])
    nonascii = root / "vidéo café 日本.mkv"
    _write(nonascii, n=6)

    def clip(name: str, **kwargs: Any) -> str:
        return str(_write(root / name, **kwargs))

    return [
        Case(name="odd_size_33x17", source=clip("odd.mkv", width=33, height=17,
             pix_fmt="yuv444p", n=6), what="odd width and height", frames=6, shape=(17, 33),
             reference=odd, tolerance=16.0),
        Case(name="odd_size_33x17_ffv1", source=clip("odd_ffv1.mkv", codec="ffv1", width=33,
             height=17, n=6), what="odd size, 4:2:0 chroma on odd sides", frames=6,
             shape=(17, 33), reference=odd, tolerance=16.0, service=False),
        Case(name="tiny_2x2", source=clip("tiny2.mkv", codec="ffv1", width=2, height=2,
             pix_fmt="yuv444p", n=6), what="2x2 pixels", frames=6, shape=(2, 2),
             reference=np.stack([image(i, 2, 2) for i in range(6)]), tolerance=4.0),
        Case(name="tiny_16x16", source=clip("tiny16.mp4", width=16, height=16, n=6),
             what="16x16 pixels", frames=6, shape=(16, 16),
             reference=np.stack([image(i, 16, 16) for i in range(6)]), tolerance=20.0),
        Case(name="huge_declared_avi_header",
             source=str(_huge_avi_header(root / "huge_avi_header.avi", 30000)),
             what="AVI headers declaring 30000x30000 over 64x48 frames", frames=4,
             shape=(H, W), reference=ref[:4], service=False),
        Case(name="resolution_change", source=str(_resolution_change(root / "res.avi")),
             what="64x48 frames, then 32x24 ones: all come out at the first size", frames=6,
             shape=(H, W), reference=ref[:6], service=False),
        Case(name="rotation_displaymatrix", source=clip("rot90.mp4", n=6, rotation=90),
             what="display matrix: rotate 90 degrees", frames=6, shape=(W, H),
             reference=upright[:6], rotation=90),
        Case(name="rotation_displaymatrix_mkv", source=clip("rot270.mkv", n=6, rotation=-90),
             what="display matrix in MKV: rotate 270 degrees", frames=6, shape=(W, H),
             reference=np.rot90(ref[:6], k=3, axes=(1, 2)), rotation=270, service=False),
        Case(name="rotate_tag_legacy", source=clip("rotate_tag.mkv", n=6,
             metadata={"rotate": "270"}), what="legacy 'rotate' tag (clockwise 270)", frames=6,
             shape=(W, H), reference=upright[:6], rotation=90, service=False),
        Case(name="variable_frame_rate", source=clip("vfr.mkv", pts_ms=VFR_MS,
             opts={"bf": "0"}), what="irregular pts", frames=len(VFR_MS), shape=(H, W),
             reference=ref[: len(VFR_MS)], times=tuple(t / 1000 for t in VFR_MS)),
        Case(name="ten_bit_yuv420p10le", source=clip("10bit.mkv", n=6,
             pix_fmt="yuv420p10le"), what="10-bit 4:2:0", frames=6, shape=(H, W),
             reference=ref[:6], service=False),
        Case(name="gray", source=clip("gray.mkv", codec="ffv1", n=6, pix_fmt="gray"),
             what="8-bit grayscale", frames=6, shape=(H, W), reference=gray[:6],
             tolerance=2.0, service=False),
        Case(name="rgb24", source=clip("rgb.mkv", codec="libx264rgb", n=6, pix_fmt="rgb24"),
             what="RGB H.264", frames=6, shape=(H, W), reference=ref[:6], service=False),
        Case(name="yuv444p", source=clip("444.mkv", n=6, pix_fmt="yuv444p"),
             what="4:4:4 chroma", frames=6, shape=(H, W), reference=ref[:6], service=False),
        Case(name="two_video_streams", source=str(_multi_video(root / "two_videos.mkv")),
             what="two video streams: the first is decoded", frames=8, shape=(H, W),
             reference=ref[:8], service=False),
        Case(name="single_frame", source=clip("one.mp4", n=1), what="a video of one frame",
             frames=1, shape=(H, W), reference=ref[:1]),
        Case(name="non_ascii_name", source=str(nonascii), what="accents and CJK in the path",
             frames=6, shape=(H, W), reference=ref[:6]),
        Case(name="y4m_rawvideo", source=clip("raw.y4m", codec="rawvideo",
             fmt="yuv4mpegpipe", n=6), what="uncompressed Y4M", frames=6, shape=(H, W),
             reference=ref[:6], service=False),
    ]  # fmt: skip


def _over_limits(root: Path) -> list[Case]:
    """Valid videos whose frames are over the default ``limits.max_pixels`` (8K UHD)."""
    huge = (12000, 12000)
    late = mjpeg_mkv(root / "grows_late.mkv", [(W, H)] * 20 + [huge])  # past the probe window
    return [
        Case(name="huge_frame_12000_mkv", source=str(mjpeg_mkv(root / "huge.mkv", [huge])),
             what="one valid 12000x12000 MJPEG frame (a 550 KB file)", error=ResourceLimitError,
             match=r"12000x12000.*limits\.max_pixels", max_bytes=1024 * 1024),
        Case(name="frame_grows_past_limit_mid_stream", source=str(late),
             what="20 frames of 64x48, then a 12000x12000 one", error=ResourceLimitError,
             match=r"frame 20 is 12000x12000.*limits\.max_pixels", max_bytes=1024 * 1024),
    ]  # fmt: skip


def _network(net: NetworkServers) -> list[Case]:
    quick = {"open_timeout_s": 1.0, "read_timeout_s": 1.0}
    return [
        Case(name="url_connection_refused",
             source=f"http://127.0.0.1:{net.closed_port}/x.mp4",
             what="nothing listens on the port", error=SourceUnreachableError,
             match="127.0.0.1", spec=quick, max_seconds=3.0),
        Case(name="url_never_answers", source=f"http://127.0.0.1:{net.silent_port}/x.mp4",
             what="the server accepts and never replies", error=SourceUnreachableError,
             match="timeout", spec=quick, max_seconds=3.0),
        Case(name="url_not_found", source=f"{net.http_base}/missing.mp4",
             what="the server answers 404", error=SourceNotFoundError, match="404",
             spec=quick, max_seconds=3.0),
        Case(name="url_stalls_mid_body", source=f"{net.http_base}/stall.mkv",
             what="the server stops sending half-way", error=SourceUnreachableError,
             match="stopped answering", spec=quick, max_seconds=6.0, service=False),
        Case(name="url_ok", source=f"{net.http_base}/clip.mkv", what="a good clip over HTTP",
             frames=N, shape=(H, W), reference=_images(), spec=quick, service=False),
    ]  # fmt: skip
