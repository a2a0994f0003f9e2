"""Results people use: queries of a store's people and exports to COCO, PNG and npz files.

* :func:`resolve_store`: a job id or store location -> the store, as the job commands find it.
* :mod:`flows.exports.query`: one frame (:func:`query_frame`, :func:`nearest_frame`) or one
  track (:func:`query_track`) as JSON-ready dicts, or CSV rows.
* :func:`export_coco` (COCO / COCO-WholeBody keypoint results and an images file),
  :func:`export_png` (indexed part-label PNGs, 16-bit owner maps), :func:`export_npz` (one npz
  per frame): each writes a frame at a time and returns an :class:`ExportSummary`.

docs/usage.md shows them with the reader API.
"""

from __future__ import annotations

from flows.exports._common import ExportError, ExportSummary, class_set, keypoint_names
from flows.exports._resolve import resolve_store
from flows.exports.coco import coco_category, coco_entries, export_coco
from flows.exports.npz import export_npz, frame_arrays
from flows.exports.png import export_png
from flows.exports.query import nearest_frame, query_frame, query_track

__all__ = [
    "ExportError",
    "ExportSummary",
    "class_set",
    "coco_category",
    "coco_entries",
    "export_coco",
    "export_npz",
    "export_png",
    "frame_arrays",
    "keypoint_names",
    "nearest_frame",
    "query_frame",
    "query_track",
    "resolve_store",
]
