"""What the queries and exports share: their error, the summary of an export, the store's label
sets (keypoint and part-class names, the part palette) and JSON-safe numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flows.errors import SpecError
from models.metadata import keypoint_set, seg_classes
from storage import ResultReader

__all__ = ["ExportError", "ExportSummary", "class_set", "keypoint_names", "num"]


class ExportError(SpecError):
    """Bad input to a query or an export: a task the store lacks, a missing track, an option
    that does not fit the format. The CLI answers it with one line and exit code 2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportSummary:
    """What an export wrote.

    Attributes:
        format: ``coco``, ``png`` or ``npz``.
        path: The file (coco) or directory (png, npz) written.
        frames: Frames written (the store's committed frames).
        persons: Persons in those frames (coco: result entries).
        files: Files written.
    """

    format: str
    path: str
    frames: int
    persons: int
    files: int

    def line(self) -> str:
        """The one-line summary the CLI prints on stderr."""
        files = f"{self.files} file{'' if self.files == 1 else 's'}"
        return (
            f"export {self.format}: wrote {self.frames} frames, {self.persons} persons "
            f"({files}) to {self.path}"
        )


def _labels(reader: ResultReader) -> dict[str, Any]:
    job = reader.attrs.get("job") or {}
    labels = job.get("labels") if isinstance(job, dict) else None
    return labels if isinstance(labels, dict) else {}


def keypoint_names(reader: ResultReader) -> tuple[str, ...]:
    """The store's keypoint names, indexed by keypoint: the job's recorded ``labels`` when they
    have K names, else the keypoint set with K keypoints (models.metadata).

    Raises:
        ExportError: If the recorded names are not K one-line strings.
    """
    k = reader.spec.num_keypoints
    recorded = _labels(reader).get("keypoints")
    if recorded is None:
        return keypoint_set(k).names
    if not (isinstance(recorded, list) and len(recorded) == k):
        got = len(recorded) if isinstance(recorded, list) else type(recorded).__name__
        msg = f"{reader.uri}: job labels 'keypoints': expected {k} names, got {got}"
        raise ExportError(msg)
    return tuple(str(n) for n in recorded)


def class_set(reader: ResultReader) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """The store's part classes: (names, RGB palette), indexed by label. The job's recorded
    ``labels`` (``seg_classes``, ``seg_palette``) when present, else the official set with the
    store's ``num_classes`` (28: Sapiens, 29: Sapiens2).

    Raises:
        ExportError: If the recorded labels do not have ``num_classes`` entries or a color is
            not an RGB triple of 0..255.
    """
    n = reader.spec.num_classes
    labels = _labels(reader)
    names, palette = labels.get("seg_classes"), labels.get("seg_palette")
    if names is None and palette is None:
        official = seg_classes("sapiens2" if n == 29 else "sapiens")
        return official.names, official.palette
    ok_names = isinstance(names, list) and len(names) == n
    ok_palette = (
        isinstance(palette, list)
        and len(palette) == n
        and all(
            isinstance(c, list | tuple)
            and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
    )
    if not (ok_names and ok_palette):
        msg = (
            f"{reader.uri}: job labels: expected {n} 'seg_classes' names and {n} RGB "
            f"'seg_palette' triples (the store's num_classes), got {_count(names)} and "
            f"{_count(palette)}"
        )
        raise ExportError(msg)
    assert isinstance(names, list) and isinstance(palette, list)
    return tuple(str(c) for c in names), tuple((c[0], c[1], c[2]) for c in palette)


def _count(value: object) -> str:
    return str(len(value)) if isinstance(value, list) else type(value).__name__


def num(value: Any) -> float | None:
    """A float for JSON: None for NaN and infinities (JSON has no NaN)."""
    v = float(value)
    return v if math.isfinite(v) else None
