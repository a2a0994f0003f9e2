"""From a decoded frame to the emitted picture: its size, its orientation, its RGB pixels.

Size rules, the only places they are computed: :func:`output_size` scales a ``(height, width)``
by one factor so that its longer side is at most ``max_side``, each side rounded and at least 1
pixel; :meth:`SizeFloor.size` scales it by one factor as far down as it goes while its height,
width and longer side stay at least the floor's, each side rounded up. Neither scales up.

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
import struct
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

__all__ = ["Orientation", "SizeFloor", "orientation_of", "output_size", "to_rgb"]

logger = logging.getLogger(__name__)


def output_size(height: int, width: int, *, max_side: int | None) -> tuple[int, int]:
    """``(height, width)`` scaled down so that the longer side is at most ``max_side``.

    Args:
        height: height in pixels, >= 1.
        width: width in pixels, >= 1.
        max_side: the longest side allowed, or None for no limit (the size is returned as is).

    Returns:
        ``(height, width)``, in that order: the size itself when it already fits.

    Example:
        >>> output_size(720, 1280, max_side=640)
        (360, 640)
    """
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeFloor:
    """The smallest upright frame a caller can use without losing anything it keeps.

    Args:
        height: the frame's height is kept at least this.
        width: the frame's width is kept at least this.
        side: the frame's longer side is kept at least this.

    Example:
        >>> SizeFloor(height=256, width=192, side=640).size(1080, 1920)
        (360, 640)
    """

    height: int = 1
    width: int = 1
    side: int = 1

    def __post_init__(self) -> None:
        for name in ("height", "width", "side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"SizeFloor.{name}: expected an int >= 1, got {value!r}"
                raise ValueError(msg)

    def size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` scaled down by one factor as far as the floor allows.

        Returns:
            ``(height, width)``: each side is ``ceil(side x s)`` for the smallest ``s <= 1``
            that keeps the height, width and longer side at or above the floor's.
        """
        scale = max(
            Fraction(self.height, height),
            Fraction(self.width, width),
            Fraction(self.side, max(height, width)),
        )
        if scale >= 1:
            return height, width
        return math.ceil(height * scale), math.ceil(width * scale)


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


def to_rgb(frame: av.VideoFrame, out: np.ndarray, *, orientation: Orientation) -> None:
    """Write ``frame`` as upright RGB into ``out``, scaling it to ``out``'s size.

    Args:
        frame: a decoded frame of any pixel format and size.
        out: destination (H, W, 3) uint8 of the upright output shape; the frame is scaled (in
            swscale, area filter when shrinking) to the size that ``orientation`` turns into
            (H, W).
        orientation: transform applied after scaling.
    """
    height, width = out.shape[:2]
    if orientation.swaps_axes:
        height, width = width, height
    shrink = width < frame.width or height < frame.height
    rgb = frame.to_ndarray(
        format="rgb24", width=width, height=height, interpolation="AREA" if shrink else None
    )
    out[...] = orientation.apply(rgb)
