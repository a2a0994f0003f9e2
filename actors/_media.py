"""PyAV plumbing for the decode stage: open a source, pick its video stream, read packets and
frames robustly, and turn frames into upright RGB arrays.

Orientation rule: the display matrix that FFmpeg attaches to decoded frames (side data
``DISPLAYMATRIX``; PyAV reads its rotation part as ``VideoFrame.rotation``, counter-clockwise
degrees) maps coded pixels to display pixels. Its 2x2 part is snapped to the nearest of the eight
axis-aligned orientations and applied with numpy as "rotate counter-clockwise by ``rotation``,
then mirror left-right if ``mirrored``". Files whose demuxer exports only the legacy ``rotate``
tag (clockwise degrees) are handled as a rotation of ``-rotate``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import av.error
import av.stream
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from actors.errors import (
    DecodeError,
    NoVideoStreamError,
    ResourceLimitError,
    SourceNotFoundError,
    SourceNotReadableError,
    SourceUnreachableError,
    UnreadableMediaError,
)

__all__ = [
    "FrameReader",
    "Orientation",
    "check_frame_pixels",
    "display_name",
    "finite_or_none",
    "is_live",
    "iter_packets",
    "network_error",
    "open_container",
    "orientation_of",
    "output_size",
    "to_rgb",
    "video_stream",
]

logger = logging.getLogger(__name__)

_LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp"})
_HTTP_SCHEMES = frozenset({"http", "https"})
#: URL schemes opened as network sources; ``file://`` is a local path, anything else is refused
#: (FFmpeg's wrapper protocols such as ``crypto+file://`` would bypass the local-file checks).
_NETWORK_SCHEMES = _LIVE_SCHEMES | _HTTP_SCHEMES | {"ftp"}
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_NETWORK_ERRORS = (av.error.ExitError, TimeoutError, ConnectionError)
_ATTACHED_PIC = av.stream.Disposition.attached_pic  # cover art stored as a one-frame "video"
_MAX_READ_ERRORS = 16  # consecutive demux errors before a source is treated as ended


def _scheme(source: str) -> str:
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", source)
    return match.group(1).lower() if match else ""


def is_live(source: str) -> bool:
    """Whether ``source`` is a live protocol (RTSP, RTMP, UDP, SRT...) that cannot seek."""
    return _scheme(source) in _LIVE_SCHEMES


def display_name(source: str | os.PathLike[str]) -> str:
    """``source`` as text for messages and logs, with any URL password replaced by ``***``."""
    text = os.fspath(source)
    if not _scheme(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _protocol_options(source: str, open_timeout_s: float, read_timeout_s: float) -> dict[str, str]:
    """FFmpeg protocol options so that a silent server fails in seconds instead of hanging."""
    scheme, read_us = _scheme(source), str(int(read_timeout_s * 1e6))
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp_transport": "tcp", "timeout": read_us}
    if scheme in _NETWORK_SCHEMES:
        return {"rw_timeout": read_us}
    return {}


def _open_target(text: str, name: str) -> str:
    """What FFmpeg is given for ``text``: a network URL as is; a plain path or ``file://`` URL
    as the absolute path of a readable regular file, checked here (FFmpeg would block on a
    FIFO, read a device forever, or read another file through a ``proto:`` prefix).

    Raises:
        SourceNotFoundError: no such file, not a regular file, or a file URL of another host.
        SourceNotReadableError: the file may not be read.
        UnreadableMediaError: an empty file, or a URL scheme that is not supported.
    """
    scheme = _scheme(text)
    if scheme in _NETWORK_SCHEMES:
        return text
    if scheme and scheme != "file":
        msg = (
            f"cannot open video {name!r}: unsupported protocol {scheme!r}; expected a local "
            "path, a file:// URL or an http(s), ftp, rtsp, rtmp, srt, udp or tcp URL"
        )
        raise UnreadableMediaError(msg)
    path = _file_url_path(text, name) if scheme else Path(text)
    _check_local_file(path, name)
    return os.path.abspath(path)  # a leading "/" keeps FFmpeg from reading "x:" as a protocol


def _file_url_path(url: str, name: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        msg = (
            f"cannot open video {name!r}: a file URL must name a path on this machine, as "
            "file:///path/to/video.mp4 (with '?' and '#' percent-encoded)"
        )
        raise SourceNotFoundError(msg)
    return Path(unquote(parts.path))


def open_container(
    source: str | os.PathLike[str], *, open_timeout_s: float, read_timeout_s: float
) -> av.container.InputContainer:
    """Open ``source`` for reading.

    Raises:
        SourceNotFoundError: a local path (or ``file://`` URL) that does not exist or is not a
            regular file.
        SourceNotReadableError: a local file this process may not read.
        SourceUnreachableError: a URL that refuses, times out or cannot be resolved.
        UnreadableMediaError: bytes FFmpeg cannot read as media (empty, not media, no header).
    """
    text, name = os.fspath(source), display_name(source)
    target = _open_target(text, name)
    began = time.monotonic()
    try:
        return av.open(
            target,
            mode="r",
            container_options=_protocol_options(target, open_timeout_s, read_timeout_s),
            timeout=(open_timeout_s, read_timeout_s),
        )
    except FileNotFoundError as e:
        msg = f"cannot open video {name!r}: not found ({e.strerror}); check the path or URL"
        raise SourceNotFoundError(msg) from e
    except av.error.HTTPNotFoundError as e:
        msg = f"cannot open video {name!r}: the server answered 404 Not Found; check the URL"
        raise SourceNotFoundError(msg) from e
    except (av.error.HTTPError, av.error.HTTPClientError) as e:
        msg = (
            f"cannot open video {name!r}: the server refused it ({_cause(e)}); check the URL "
            "and that it may be read"
        )
        raise SourceUnreachableError(msg) from e
    except av.error.ProtocolNotFoundError as e:
        msg = (
            f"cannot open video {name!r}: FFmpeg has no protocol for {_scheme(target)!r} URLs; "
            "expected a local path or an http(s), rtsp or rtmp URL"
        )
        raise UnreadableMediaError(msg) from e
    except _NETWORK_ERRORS as e:
        msg = (
            f"cannot open video {name!r}: {_cause(e)} (open timeout {open_timeout_s:g} s); "
            "check that the server is up and the URL is right"
        )
        raise SourceUnreachableError(msg) from e
    except (av.error.FFmpegError, OSError) as e:
        waited = time.monotonic() - began
        if _scheme(target) and waited >= 0.9 * min(open_timeout_s, read_timeout_s):
            msg = (
                f"cannot open video {name!r}: no usable answer within {waited:.1f} s "
                f"({_cause(e)}); check that the server is up and the URL is right"
            )
            raise SourceUnreachableError(msg) from e
        msg = (
            f"cannot open video {name!r}: {_cause(e)}; expected a media container FFmpeg can "
            "read (the file may be truncated before its header/index, or not a video)"
        )
        raise UnreadableMediaError(msg) from e


def _check_local_file(path: Path, name: str) -> None:
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        msg = f"cannot open video {name!r}: no such file; check the path"
        raise SourceNotFoundError(msg) from None
    except PermissionError:
        msg = f"cannot open video {name!r}: permission denied; check the path's permissions"
        raise SourceNotReadableError(msg) from None
    except (OSError, ValueError) as e:  # a name too long, a symlink loop, a NUL byte
        msg = f"cannot open video {name!r}: not a usable path ({_cause(e)}); check the path"
        raise SourceNotFoundError(msg) from None
    if not stat.S_ISREG(status.st_mode):
        kind = next((what for test, what in _FILE_KINDS if test(status.st_mode)), "unknown")
        msg = f"cannot open video {name!r}: not a regular file but {kind}; expected a video file"
        raise SourceNotFoundError(msg)
    if not os.access(path, os.R_OK):
        msg = f"cannot open video {name!r}: permission denied; check the file's permissions"
        raise SourceNotReadableError(msg)
    if status.st_size == 0:
        msg = f"cannot open video {name!r}: the file is empty (0 bytes)"
        raise UnreadableMediaError(msg)


def _cause(error: BaseException) -> str:
    """One short line: the error's type and its C-level message, without FFmpeg's log."""
    if isinstance(error, av.error.ExitError):  # how PyAV's timeout interrupts FFmpeg
        return "timed out"
    text = " ".join(str(getattr(error, "strerror", None) or error).split())
    return f"{type(error).__name__}: {text[:200]}"


def network_error(error: BaseException, name: str, index: int | None = None) -> DecodeError:
    """A mid-stream network failure as a :class:`SourceUnreachableError`."""
    where = "" if index is None else f" at decode index {index}"
    msg = f"video {name!r} stopped answering{where}: {_cause(error)}; retry or resume the job"
    return SourceUnreachableError(msg)


def video_stream(
    container: av.container.InputContainer, name: str, *, threads: int
) -> av.video.stream.VideoStream:
    """The first decodable video stream that is not a cover picture, set up for threaded
    decoding.

    Args:
        container: an open input container.
        name: source name for messages.
        threads: decoder threads (0: FFmpeg decides).

    Raises:
        NoVideoStreamError: the container has no video stream (cover pictures do not count).
        UnreadableMediaError: its video streams are in codecs FFmpeg cannot decode.
    """
    videos = [s for s in container.streams.video if not s.disposition & _ATTACHED_PIC]
    if not videos:
        kinds = sorted(_kind(s) for s in container.streams) or ["none"]
        msg = f"{name!r} has no video stream (streams: {', '.join(kinds)}); expected a video"
        if not {s.type for s in container.streams} - {"data", "attachment"}:
            msg += " (if it is one, the file may be truncated or damaged)"
        raise NoVideoStreamError(msg)
    decodable = [s for s in videos if s.codec_context is not None]
    if not decodable:  # PyAV gives no codec context when FFmpeg has no decoder for the codec
        msg = (
            f"{name!r}: its video stream is in an unknown codec (no decoder in this FFmpeg "
            "build); expected a common video codec (H.264, HEVC, VP9, AV1, MPEG-4, MJPEG, ...)"
        )
        raise UnreadableMediaError(msg)
    stream = decodable[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _kind(stream: av.stream.Stream) -> str:
    if stream.type == "video" and stream.disposition & _ATTACHED_PIC:
        return "cover picture"
    return str(stream.type)


def check_frame_pixels(
    width: int, height: int, max_pixels: int | None, name: str, index: int | None = None
) -> None:
    """Refuse a frame of ``width`` x ``height`` above ``max_pixels`` (None: no limit).

    Raises:
        ResourceLimitError: one line naming the limit, the frame size and the option.
    """
    if max_pixels is None or width * height <= max_pixels:
        return
    which = "its frames are" if index is None else f"frame {index} is"
    msg = (
        f"video {name!r}: {which} {width}x{height} ({width * height:,} pixels), over the "
        f"limit of {max_pixels:,} pixels per frame; raise limits.max_pixels to decode it"
    )
    raise ResourceLimitError(msg)


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so that the longer side is at most ``max_side``."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True, slots=True)
class Orientation:
    """Upright transform: rotate ``rotation`` degrees counter-clockwise, then maybe mirror."""

    rotation: int = 0
    mirrored: bool = False

    @property
    def swaps_axes(self) -> bool:
        return self.rotation in (90, 270)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) -> (H', W', C) view, upright."""
        out = np.rot90(image, k=self.rotation // 90) if self.rotation else image
        return out[:, ::-1] if self.mirrored else out


def _from_matrix(a: float, b: float, c: float, d: float) -> Orientation:
    """Snap the display matrix's 2x2 part to the orientation that maps pixels the same way."""
    # Display coordinates: x' = a*x + c*y, y' = b*x + d*y (FFmpeg's row-vector convention).
    probe = np.arange(6).reshape(2, 3, 1)
    if abs(a) + abs(d) >= abs(b) + abs(c):
        target = probe[:: (-1 if d < 0 else 1), :: (-1 if a < 0 else 1)]
    else:
        moved = probe.transpose(1, 0, 2)
        target = moved[:: (-1 if b < 0 else 1), :: (-1 if c < 0 else 1)]
    for rotation in (0, 90, 180, 270):
        for mirrored in (False, True):
            candidate = Orientation(rotation, mirrored)
            if np.array_equal(candidate.apply(probe), target):
                return candidate
    raise AssertionError("every signed permutation is a rotation with an optional mirror")


def orientation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Orientation:
    """The upright transform of ``frame`` from its display matrix (or the legacy rotate tag)."""
    for side in frame.side_data:
        if side.type == SideDataType.DISPLAYMATRIX and len(bytes(side)) >= 36:
            a, b, _, c, d = struct.unpack("=5i", bytes(side)[:20])
            if abs(frame.rotation) % 90:
                logger.warning("display rotation %s snapped to 90 degrees", frame.rotation)
            return _from_matrix(a, b, c, d)
    # FFmpeg looks metadata keys up case-insensitively; Matroska stores tags as "ROTATE".
    tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), None)
    if tag is not None:
        try:
            degrees = -float(tag)
        except ValueError:
            logger.warning("ignoring unreadable rotate tag %r", tag)
            return Orientation()
        return Orientation(rotation=round(degrees / 90) % 4 * 90)
    return Orientation()


def to_rgb(
    frame: av.VideoFrame, out: np.ndarray, *, size: tuple[int, int], orientation: Orientation
) -> None:
    """Write ``frame`` as upright RGB into ``out`` ((H, W, 3) uint8), scaling to ``size``.

    Args:
        frame: a decoded frame of any pixel format and size.
        out: destination (H, W, 3) uint8, already of the upright output shape.
        size: (width, height) before rotation; scaling happens in swscale (area filter).
        orientation: transform applied after scaling.
    """
    width, height = size
    shrink = width < frame.width or height < frame.height
    rgb = frame.to_ndarray(
        format="rgb24", width=width, height=height, interpolation="AREA" if shrink else None
    )
    out[...] = orientation.apply(rgb)


class FrameReader:
    """Decoded frames of one video stream in decode order, numbered by a decode counter.

    The counter counts decoder output slots: every frame out of the decoder, plus one for each
    packet that fails to decode (the frame it stood for). So a corrupt packet does not shift the
    numbering, and ``index / fps`` times, of the frames after it. Frames flagged corrupt and
    failed packets are skipped and counted in ``n_corrupt``. Read errors are
    retried; after ``_MAX_READ_ERRORS`` in a row the source is treated as ended, like a
    truncated file. Network failures raise :class:`SourceUnreachableError`.

    A frame above ``max_pixels`` raises :class:`ResourceLimitError` before it is yielded (and
    so before any conversion to RGB).

    At the end of the stream, packets that never got a slot are counted in ``n_corrupt`` too:
    PyAV stops draining a frame-threaded decoder at the first decode error (and drops an error
    that follows a frame), so on damaged input the frames still inside the decoder would
    otherwise vanish uncounted.

    Args:
        packets: the stream's packets (from :func:`iter_packets`).
        first_index: decode index of the first frame these packets produce.
        name: source name for messages.
        max_pixels: largest frame (width x height) let through, or None for no limit.
    """

    def __init__(
        self,
        packets: Iterator[av.Packet],
        *,
        first_index: int,
        name: str,
        max_pixels: int | None = None,
    ) -> None:
        self._packets = packets
        self._name = name
        self._max_pixels = max_pixels
        self._first_index = first_index
        self.next_index = first_index
        self.n_corrupt = 0

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        fed = 0  # packets that stand for a frame (non-empty, not to be discarded)
        for packet in self._packets:
            fed += bool(packet.size) and not packet.is_discard
            try:
                frames = packet.decode()
            except _NETWORK_ERRORS as e:
                raise network_error(e, self._name, self.next_index) from e
            except av.error.FFmpegError as e:
                self.n_corrupt += 1
                self.next_index += 1  # the frame this packet stood for keeps its slot
                logger.debug("%s: packet at pts %s failed to decode: %s", self._name, packet.pts, e)
                continue
            for frame in frames:
                index, self.next_index = self.next_index, self.next_index + 1
                if frame.is_corrupt:
                    self.n_corrupt += 1
                    continue
                check_frame_pixels(frame.width, frame.height, self._max_pixels, self._name, index)
                yield index, frame
        lost = fed - (self.next_index - self._first_index)
        if lost > 0:
            self.n_corrupt += lost
            self.next_index += lost
            logger.warning(
                "%s: %d frame(s) never came out of the decoder (damaged input)", self._name, lost
            )


def iter_packets(
    container: av.container.InputContainer, stream: Any, name: str
) -> Iterator[av.Packet]:
    """Packets of ``stream`` until the end, retrying after read errors (see FrameReader)."""
    errors = 0
    while True:
        try:
            for packet in container.demux(stream):
                errors = 0
                yield packet
            return
        except _NETWORK_ERRORS as e:
            raise network_error(e, name) from e
        except av.error.FFmpegError as e:
            errors += 1
            logger.debug("%s: read error %d: %s", name, errors, e)
            if errors >= _MAX_READ_ERRORS:
                logger.warning("%s: %d read errors in a row, treating as end", name, errors)
                return


def finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite positive number, else None."""
    return value if value is not None and math.isfinite(value) and value > 0 else None
