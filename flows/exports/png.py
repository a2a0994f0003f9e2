"""Per-frame part-label PNGs: indexed (palette) 8-bit images in the store's class palette.

``<out>/<frame:06d>.png`` holds frame ``frame``'s part labels (0 = background, up to
``num_classes - 1``) as the pixel values of an indexed PNG whose palette is the store's class
palette (the job's recorded ``labels``, else the official 28-class Sapiens or 29-class Sapiens2
palette), so any viewer shows the official colours and ``numpy.asarray(PIL.Image.open(p))``
gives the labels back. With ``owner=True``, ``<out>/person/<frame:06d>.png`` holds the owner map
as a 16-bit grayscale PNG (0 = no person, k = the person at row k - 1 of
``reader.persons(frame)``). Maps are those of ``reader.frame(frame, size=size)`` (per-person
stores compose them on read), written one frame at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from flows.exports._common import ExportError, ExportSummary, class_set
from storage import ResultReader

__all__ = ["export_png", "label_png", "owner_png"]


def label_png(labels: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> Image.Image:
    """An indexed image of (H, W) uint8 ``labels`` with ``palette`` (RGB per label)."""
    h, w = labels.shape
    img = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, np.uint8).tobytes())
    img.putpalette([v for rgb in palette for v in rgb])
    return img


def owner_png(owner: np.ndarray) -> Image.Image:
    """A 16-bit grayscale image of an (H, W) uint16 owner map."""
    h, w = owner.shape
    return Image.frombytes("I;16", (w, h), np.ascontiguousarray(owner, "<u2").tobytes())


def export_png(
    reader: ResultReader,
    out_dir: str | Path,
    *,
    owner: bool = False,
    size: tuple[int, int] | None = None,
) -> ExportSummary:
    """Write every committed frame's part labels (and owner map) as PNGs; see the module
    docstring.

    Args:
        reader: The store.
        out_dir: Directory of the PNGs (created).
        owner: Also write the owner maps under ``person/``.
        size: (H, W) of the maps; default the store's output size.

    Raises:
        ExportError: If the store has no seg task, or its recorded labels are malformed.
    """
    if not reader.spec.has("seg"):
        msg = f"{reader.uri}: PNG label maps need the seg task; the store has {reader.spec.tasks}"
        raise ExportError(msg)
    _, palette = class_set(reader)
    out = Path(out_dir)
    (out / "person" if owner else out).mkdir(parents=True, exist_ok=True)
    n = reader.num_frames
    for i in range(n):
        maps = reader.task_arrays("seg", i, i + 1, size=size)  # what frame(i, size) gives
        label_png(maps["part"][0], palette).save(out / f"{i:06d}.png", optimize=False)
        if owner:
            owner_png(maps["person"][0]).save(out / "person" / f"{i:06d}.png")
    persons = int(reader.read_frames().person_count.sum())
    files = n * (2 if owner else 1)
    return ExportSummary(format="png", path=str(out), frames=n, persons=persons, files=files)
