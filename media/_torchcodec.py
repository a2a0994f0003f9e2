"""An optional decoder behind :class:`~media.VideoReader`: torchcodec, with FFmpeg on the CPU
(``torchcodec-cpu``) or NVDEC on a CUDA device (``torchcodec-cuda``).

It is optional (``pip install 'sapiens-stream[gpu-decode]'``) and imported lazily: nothing here
imports torch or torchcodec at import time. torchcodec numbers frames by presentation time
(its exact mode scans the file), while the reader numbers them by decode counter; the two
agree only where a file's frames come out of the decoder in increasing pts, one per packet,
which is what the probe calls ``seekable``. So torchcodec reads only
(:func:`torchcodec_unsuitable`):

* local files (network sources keep PyAV's open and read timeouts);
* ``VideoInfo.seekable`` ones (pts present and increasing, one packet per frame, a codec of
  the seek list): not AVI files with reordered pts, not live streams;
* neither rotated nor mirrored (torchcodec rotates by itself but does not mirror).

The frames' pts come from a demux of the file with PyAV (no decoding), sorted: frame ``i``
has the ``i``-th smallest pts, and every frame torchcodec returns is checked against it.
A packet torchcodec cannot decode, or a frame that does not match, ends the torchcodec pass:
the reader continues with PyAV from the first frame not yet delivered, as an exact resume, and
PyAV records the corrupt slots. Frames that FFmpeg conceals (flagged corrupt, but output) are
delivered by torchcodec as pictures, where PyAV records them as corrupt slots.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from fractions import Fraction
from typing import Any, Literal, get_args

import av
import numpy as np

from media._info import VideoInfo
from media._source import _open_target, display_name
from media._stream import video_stream
from media.errors import MediaError

__all__ = [
    "BACKENDS",
    "INSTALL_HINT",
    "Backend",
    "TorchcodecFrames",
    "TorchcodecUnavailableError",
    "UnsupportedBackendError",
    "choose_backend",
    "torchcodec_error",
    "torchcodec_unsuitable",
]

#: Which decoder reads the frames.
Backend = Literal["pyav", "torchcodec-cpu", "torchcodec-cuda"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
INSTALL_HINT = "install with: pip install 'sapiens-stream[gpu-decode]'"


class TorchcodecUnavailableError(MediaError, ImportError):
    """torchcodec was asked for but is not installed or does not load."""


class UnsupportedBackendError(MediaError, ValueError):
    """torchcodec was asked for a source it cannot read exactly as PyAV does."""


class TorchcodecMismatch(MediaError, RuntimeError):
    """torchcodec failed to decode, or gave a frame other than the one expected; the reader
    continues with PyAV. Raised and handled inside ``media``."""


@functools.cache
def torchcodec_error() -> str | None:
    """None when torchcodec imports and loads, else why not (one line, with the install hint).
    Nothing is imported when it is not installed."""
    if importlib.util.find_spec("torchcodec") is None:
        return f"torchcodec is not installed; {INSTALL_HINT}"
    try:
        import torchcodec.decoders  # noqa: F401
    except ImportError as e:
        return f"torchcodec is not installed ({e}); {INSTALL_HINT}"
    except (OSError, RuntimeError) as e:  # its libraries: FFmpeg 4-8, the torch it was built for
        return (
            f"torchcodec is installed but does not load ({_line(e)}); it needs FFmpeg's shared "
            "libraries (4 to 8) and the build of torch it was made for"
        )
    return None


def torchcodec_unsuitable(source: str | os.PathLike[str], info: VideoInfo) -> str | None:
    """Why torchcodec cannot give ``source``'s frames exactly as PyAV does, or None."""
    text = os.fspath(source)
    if "://" in text and not text.startswith("file://"):
        return "it is a network source (torchcodec reads local files only)"
    if not info.seekable:
        return (
            "its frames are not numbered alike by pts and by decode order (not a seekable "
            "file: missing or reordered pts, or not one packet per frame)"
        )
    if info.rotation or info.mirrored:
        return "it is rotated or mirrored"
    return None


def choose_backend(
    asked: str, source: str | os.PathLike[str], info: VideoInfo, *, cuda: Callable[[], bool]
) -> Backend:
    """The decoder that ``asked`` resolves to for ``source``.

    Args:
        asked: ``auto`` (torchcodec on a CUDA device where torchcodec loads, ``cuda()`` says
            there is a device and the source suits it; else PyAV), or one of :data:`BACKENDS`.
        source: the path or URL.
        info: its probed facts.
        cuda: whether this process sees a CUDA device; called only once torchcodec loads.

    Raises:
        TorchcodecUnavailableError: torchcodec was asked for and does not load (with the hint).
        UnsupportedBackendError: torchcodec was asked for a source it cannot read exactly.
    """
    if asked == "pyav":
        return "pyav"
    missing = torchcodec_error()  # imports nothing when it is not installed
    if asked == "auto":
        if missing is not None or torchcodec_unsuitable(source, info) is not None:
            return "pyav"
        return "torchcodec-cuda" if cuda() else "pyav"
    if asked not in BACKENDS:
        msg = f"backend: expected 'auto' or one of {list(BACKENDS)}, got {asked!r}"
        raise UnsupportedBackendError(msg)
    if missing is not None:
        raise TorchcodecUnavailableError(f"backend {asked!r}: {missing}")
    if (why := torchcodec_unsuitable(source, info)) is not None:
        msg = f"backend {asked!r} cannot read {info.source!r}: {why}; use 'auto' or 'pyav'"
        raise UnsupportedBackendError(msg)
    return asked  # type: ignore[return-value]


class TorchcodecFrames:
    """Frames of one local file decoded by torchcodec, upright RGB at ``size``.

    Args:
        source: local path or ``file://`` URL (see :func:`torchcodec_unsuitable`).
        info: the probe's facts; frames come out at ``(info.height, info.width)``.
        device: ``"cpu"`` or ``"cuda"``.
        threads: FFmpeg threads of CPU decoding (0: FFmpeg decides).

    Raises:
        TorchcodecUnavailableError: torchcodec is not installed or does not load.
        TorchcodecMismatch: its frame count differs from the file's packet count.
    """

    def __init__(
        self, source: str | os.PathLike[str], info: VideoInfo, *, device: str, threads: int
    ):
        if (why := torchcodec_error()) is not None:
            raise TorchcodecUnavailableError(why)
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        self._name = display_name(source)
        path = _open_target(os.fspath(source), self._name)
        self._size = (info.height, info.width)
        self._time_base: Fraction | None = info.time_base
        stream_index, self.pts = _sorted_pts(path, self._name)
        transforms = [Resize(self._size)] if self._size != info.full_size else None
        try:
            self._decoder: Any = VideoDecoder(
                path,
                stream_index=stream_index,
                dimension_order="NHWC",
                num_ffmpeg_threads=threads,
                device=device,
                seek_mode="exact",
                transforms=transforms,
            )
        except _FAILURES as e:
            msg = f"{self._name}: torchcodec cannot open it: {_line(e)}"
            raise TorchcodecMismatch(msg) from e
        if len(self._decoder) != len(self.pts):
            msg = f"{self._name}: torchcodec sees {len(self._decoder)} frames, PyAV {len(self.pts)}"
            raise TorchcodecMismatch(msg)

    def frames(self, indices: list[int]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB of the frames at ``indices`` (increasing decode indices).

        Raises:
            TorchcodecMismatch: a frame failed to decode, or its pts or size is not the one
                expected.
        """
        try:
            batch = self._decoder.get_frames_at(indices)
        except _FAILURES as e:
            msg = f"{self._name}: torchcodec failed on frames {indices[0]}..{indices[-1]}: "
            msg += _line(e)
            raise TorchcodecMismatch(msg) from e
        data = batch.data.cpu().numpy()
        if data.shape[1:] != (*self._size, 3):
            msg = f"{self._name}: torchcodec gave frames of {data.shape[1:]}, expected {self._size}"
            raise TorchcodecMismatch(msg)
        assert self._time_base is not None  # seekable files have one
        got = [round(Fraction(float(s)) / self._time_base) for s in batch.pts_seconds.tolist()]
        want = [self.pts[i] for i in indices]
        if got != want:
            msg = f"{self._name}: torchcodec gave pts {got[:4]}..., expected {want[:4]}..."
            raise TorchcodecMismatch(msg)
        return data


#: What torchcodec raises on input it cannot decode (its C++ errors arrive as RuntimeError).
_FAILURES = (RuntimeError, ValueError, IndexError, OSError)


def _line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _sorted_pts(path: str, name: str) -> tuple[int, list[int]]:
    """The index of the video stream PyAV reads and the pts of its frames in presentation
    order, read from its packets (one per frame in a seekable file) without decoding."""
    with av.open(path) as container:
        stream = video_stream(container, name, threads=1)
        index = stream.index  # read while the container is open
        pts = [
            p.pts
            for p in container.demux(stream)
            if p.pts is not None and p.size and not p.is_discard
        ]
    return index, sorted(pts)
