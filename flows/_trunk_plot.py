"""A PIL line plot of each task's error against the FLOPs a trunk saves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["plot_errors"]

_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))
_W, _H, _M = 640, 420, 60


def plot_errors(
    path: Path,
    saved_fraction: Sequence[float],
    errors: Sequence[Mapping[str, float]],
    tolerance: Mapping[str, float],
) -> Path:
    """Write a PNG: x = fraction of FLOPs saved, y = each task's error divided by its
    tolerance (by its largest error where no tolerance is given); one line per task, a dashed
    line at 1 when tolerances are given, and each point labelled with its k."""
    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    tasks = list(errors[0]) if errors else []
    scales = {
        t: tolerance.get(t) or max((row[t] for row in errors), default=0.0) or 1.0 for t in tasks
    }
    ys = [row[t] / scales[t] for row in errors for t in tasks] or [1.0]
    top = max(1.0, *ys) * 1.1
    right = max(max(saved_fraction, default=0.0), 1e-9)

    def at(x: float, y: float) -> tuple[float, float]:
        return (_M + x / right * (_W - 2 * _M), _H - _M - y / top * (_H - 2 * _M))

    draw.line([at(0, 0), at(right, 0)], fill="black")
    draw.line([at(0, 0), at(0, top)], fill="black")
    if tolerance:
        x0, y1 = at(0, 1.0)
        x1, _ = at(right, 1.0)
        for x in range(int(x0), int(x1), 12):
            draw.line([(x, y1), (x + 6, y1)], fill="grey")
    draw.text((_M, _H - _M + 20), f"FLOPs saved (fraction, max {right:.3f})", fill="black")
    unit = "error / tolerance" if tolerance else "error / largest error"
    draw.text((5, 10), unit, fill="black")
    for i, task in enumerate(tasks):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = [
            at(x, row[task] / scales[task]) for x, row in zip(saved_fraction, errors, strict=True)
        ]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for k, (x, y) in enumerate(pts):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
            if i == 0:
                draw.text((x + 4, y - 14), str(k), fill="black")
        draw.text((_W - _M - 60, 10 + 14 * i), task, fill=colour)
    img.save(path)
    return path
