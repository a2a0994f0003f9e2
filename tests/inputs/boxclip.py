"""A synthetic clip whose picture is known: a white box walking over a dark background, for
tests that compare where things are in frames decoded at different sizes or by different
decoders."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

__all__ = ["BOX_H", "BOX_W", "CODEC", "box_at", "bright_box", "write_clip"]

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
BOX_W, BOX_H = 48, 96  # the white "person" of the synthetic clips, in coded pixels


def box_at(i: int, width: int, height: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (exclusive) of frame ``i``'s white box: it walks right and down."""
    x0, y0 = 16 + 24 * i, 8 + 6 * i
    assert x0 + BOX_W <= width and y0 + BOX_H <= height
    return x0, y0, x0 + BOX_W, y0 + BOX_H


def write_clip(
    path: Path,
    *,
    width: int,
    height: int,
    n: int,
    rotation: int | None = None,
    bframes: int | None = None,
) -> Path:
    """``n`` frames of a white box on a dark background at :func:`box_at` (``bframes``: B-frames
    between references, and a GOP of 6, so decode order differs from presentation order)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(CODEC, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if bframes is not None and CODEC == "libx264":
            stream.options = {"bf": str(bframes), "g": "6"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            img = np.full((height, width, 3), 16, np.uint8)
            x0, y0, x1, y1 = box_at(i, width, height)
            img[y0:y1, x0:x1] = 235
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return path


def bright_box(rgb: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of the bright area, in pixel edges (float: a half-bright edge pixel
    counts half), from the row and column sums of the brightness."""
    level = (rgb.mean(axis=2) - 16.0) / (235.0 - 16.0)
    cols, rows = level.clip(0, 1).max(axis=0), level.clip(0, 1).max(axis=1)

    def span(profile: np.ndarray) -> tuple[float, float]:
        inside = np.flatnonzero(profile > 0.5)
        first, last = int(inside[0]), int(inside[-1])
        lead = profile[first - 1] if first > 0 else 0.0
        tail = profile[last + 1] if last + 1 < len(profile) else 0.0
        return first - float(lead), last + 1 + float(tail)

    (x0, x1), (y0, y1) = span(cols), span(rows)
    return np.array([x0, y0, x1, y1])
