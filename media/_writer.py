"""Writing RGB frames to a video file."""

from __future__ import annotations

import os
from fractions import Fraction
from types import TracebackType

import av
import numpy as np

__all__ = ["VideoWriter"]


class VideoWriter:
    """A video file sink of RGB frames, used as a context manager.

    The file is created when the writer is; the video stream is added with the first frame's
    size, and every later frame is encoded at that size. Leaving the ``with`` block normally
    flushes the encoder and closes the file; leaving it by an exception closes the file
    without flushing.

    Args:
        path: the output file; its suffix picks the container (``.mp4``, ``.mkv`` ...).
        fps: frame rate, written as a fraction with a denominator of at most 1000.
        codec: encoder name.
        pix_fmt: pixel format of the encoded stream (``yuv420p`` needs even sides).

    Example:
        >>> with VideoWriter("out.mp4", fps=25.0) as sink:  # doctest: +SKIP
        ...     for rgb in frames:  # (H, W, 3) uint8
        ...         sink.write(rgb)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
    ) -> None:
        self._rate = Fraction(fps).limit_denominator(1000)
        self._codec, self._pix_fmt = codec, pix_fmt
        self._container = av.open(os.fspath(path), "w")
        self._stream: av.video.stream.VideoStream | None = None

    def write(self, rgb: np.ndarray) -> None:
        """Encode one (H, W, 3) uint8 RGB frame."""
        if self._stream is None:
            self._stream = self._container.add_stream(self._codec, rate=self._rate)
            self._stream.width, self._stream.height = rgb.shape[1], rgb.shape[0]
            self._stream.pix_fmt = self._pix_fmt
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()
