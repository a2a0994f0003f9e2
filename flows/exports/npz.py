"""One compressed ``.npz`` per frame with everything the store holds for it.

``<out>/<frame:06d>.npz`` (``numpy.load(p)`` reads it; nothing is pickled) has, for frame
``frame``:

* scalars ``frame``, ``source_index``, ``time_s`` (NaN: unknown), ``status`` (``ok``,
  ``corrupt`` or ``skipped``);
* persons, aligned on axis 0: ``track_id`` (P,), ``box_xyxy`` (P, 4) and ``score`` (P,);
  with pose ``keypoints_xy`` (P, K, 2) and ``keypoint_score`` (P, K) in source pixels, and
  ``keypoint_names`` (K,);
* the frame maps of the dense tasks, as ``reader.frame(frame, size=size)`` gives them (a
  per-person store composes them): ``part`` (H, W) uint8 and ``person_map`` (H, W) uint16
  (seg), ``depth`` (H, W) float32, ``normal`` (H, W, 3) float32, ``pointmap`` (H, W, 3)
  float32 metric x, y, z (Sapiens2); with seg also ``class_names`` (C,);
* in a per-person store, each person's own patches, packed as the store packs them: for task
  field ``F`` (``part_patch``, ``fg_patch``, ``depth_patch``, ``normal_patch``,
  ``pointmap_patch``) ``F`` holds the persons' (h, w[, 3]) patches one after another, each
  flattened row-major, and ``F_hw`` (P, 2) their (h, w); ``patch_box`` (P, 4) int32 and, with
  pointmap, ``pointmap_scale`` (P,). Values are decoded as ``FrameData.patches`` gives them
  (depth with its scale applied, unit normals, metric xyz).

One file per frame keeps the export streaming (a frame at a time, any video length) and each
file self-contained; ``numpy.load`` of a directory's files in name order walks the video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flows.exports._common import ExportSummary, class_set, keypoint_names
from storage import FrameData, ResultReader

__all__ = ["PATCH_FIELDS", "export_npz", "frame_arrays"]

PATCH_FIELDS: dict[str, tuple[type, tuple[int, ...]]] = {
    "part_patch": (np.uint8, ()),
    "fg_patch": (np.uint8, ()),
    "depth_patch": (np.float32, ()),
    "normal_patch": (np.float32, (3,)),
    "pointmap_patch": (np.float32, (3,)),
}
"""``PersonPatches`` fields written packed (with their ``_hw``): dtype and trailing shape."""
_MAP_FIELDS = ("part", "person_map", "depth", "normal", "pointmap")


def frame_arrays(reader: ResultReader, data: FrameData) -> dict[str, np.ndarray]:
    """The arrays of one frame's npz (see the module docstring)."""
    p = data.persons
    out: dict[str, Any] = {
        "frame": np.int64(data.index),
        "source_index": np.int64(data.source_index),
        "time_s": np.float64(data.time_s),
        "status": np.array(data.status),
        "track_id": p.track_id,
        "box_xyxy": p.box_xyxy,
        "score": p.score,
    }
    if p.keypoints_xy is not None:
        out["keypoints_xy"] = p.keypoints_xy
        out["keypoint_score"] = p.keypoint_score
        out["keypoint_names"] = np.array(keypoint_names(reader))
    for name in _MAP_FIELDS:
        value = getattr(data, name)
        if value is not None:
            out[name] = value
    if data.part is not None:
        out["class_names"] = np.array(class_set(reader)[0])
    if data.patches is not None:
        out["patch_box"] = data.patches.patch_box
        for name in PATCH_FIELDS:
            patches = getattr(data.patches, name)
            if patches is not None:
                out[name], out[f"{name}_hw"] = _packed(patches, *PATCH_FIELDS[name])
        if data.patches.pointmap_scale is not None:
            out["pointmap_scale"] = data.patches.pointmap_scale
    return out


def _packed(
    patches: tuple[np.ndarray, ...], dtype: type, tail: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of shape (h, w, *tail) as one (sum h*w, *tail) array and their (P, 2) (h, w)."""
    hw = np.array([p.shape[:2] for p in patches], np.int32).reshape(len(patches), 2)
    flat = [np.asarray(p, dtype).reshape(-1, *tail) for p in patches]
    return np.concatenate([np.zeros((0, *tail), dtype), *flat]), hw


def export_npz(
    reader: ResultReader, out_dir: str | Path, *, size: tuple[int, int] | None = None
) -> ExportSummary:
    """Write one npz per committed frame to ``out_dir`` (created); see the module docstring.

    Args:
        reader: The store.
        out_dir: Directory of the files.
        size: (H, W) of the frame maps; default the store's output size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    persons = 0
    n = reader.num_frames
    for i in range(n):
        data = reader.frame(i, size=size)
        np.savez_compressed(out / f"{i:06d}.npz", **frame_arrays(reader, data))
        persons += len(data.persons)
    return ExportSummary(format="npz", path=str(out), frames=n, persons=persons, files=n)
