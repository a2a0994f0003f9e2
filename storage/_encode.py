"""Turn `FrameResult`s into on-disk rows and back (quantisation, resampling, block assembly).

Precision kept (tested in tests/unit/storage/test_encode.py):

* keypoints_xy: float32 rounded to a 1/64 px grid (error <= 1/128 px).
* keypoint_score, depth, pointmap: float16 (relative error <= 2**-11; |depth| and |x|, |y|,
  |z| of the pointmap must be <= 65504, else the writer raises; non-finite values become NaN).
* normal: int8 ``round(n * 127)``; decoded vectors are renormalised (angle error < 0.5 deg).
* part, person_map, boxes, scores, ids: exact. Part labels must be below the store's
  ``num_classes`` (28 or 29).
* per-person patches (schema v2) arrive in their stored dtypes (uint8 labels and foreground,
  float16 depth with a float32 scale, int8 normals, float16 raw pointmap xyz with the model's
  float32 scale) and are stored exactly, at the top-left of the block's pixel segment; see
  :mod:`storage._pixels` for how they are written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from storage.errors import SchemaMismatchError
from storage.frame import FrameResult
from storage.schema import FRAME_STATUS, MAX_PART_CLASSES, NORMAL_SCALE, StoreSpec, ZarrLayout

KEYPOINT_GRID = 64.0
PTS_UNKNOWN = -(2**63)
FLOAT16_MAX = float(np.finfo(np.float16).max)

Rows = dict[str, npt.NDArray[Any]]
Patches = dict[str, tuple[npt.NDArray[Any], ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class EncodedFrame:
    """One frame converted to on-disk dtypes; ``persons`` rows are packed per frame.

    ``patches`` holds each pixel array's per-person patches at their own size (written
    packed, never padded).
    """

    index: int
    scalars: tuple[int, int, float]
    persons: Rows
    maps: Rows
    status: int = FRAME_STATUS["ok"]
    patches: Patches = dataclasses.field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        return int(self.persons["persons/track_id"].shape[0])


def _resample(m: npt.NDArray[Any], height: int, width: int) -> npt.NDArray[Any]:
    """Nearest-neighbour resample of an (h, w[, c]) map to (height, width[, c])."""
    h, w = m.shape[:2]
    if (h, w) == (height, width):
        return m
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.intp), w - 1)
    return m[rows[:, None], cols[None, :]]


def _check_against_spec(layout: ZarrLayout, r: FrameResult) -> None:
    spec = layout.spec
    if r.tasks != spec.tasks:
        msg = f"frame {r.index}: expected results for tasks {spec.tasks}, got {r.tasks}"
        raise SchemaMismatchError(msg)
    if r.num_persons > spec.max_persons_per_frame:
        msg = (
            f"frame {r.index}: {r.num_persons} persons exceed max_persons_per_frame="
            f"{spec.max_persons_per_frame}; create the store with a larger StoreSpec value"
        )
        raise SchemaMismatchError(msg)
    if r.keypoints_xy is not None and r.keypoints_xy.shape[1] != spec.num_keypoints:
        msg = (
            f"frame {r.index}: expected {spec.num_keypoints} keypoints, "
            f"got {r.keypoints_xy.shape[1]}"
        )
        raise SchemaMismatchError(msg)
    size = r.map_size
    allowed = {(spec.height, spec.width), (spec.source_height, spec.source_width)}
    if size is not None and size not in allowed:
        msg = f"frame {r.index}: expected maps of size {sorted(allowed)}, got {size}"
        raise SchemaMismatchError(msg)
    _check_patches_against_spec(spec, r)
    _check_labels(spec, r)


def _check_labels(spec: StoreSpec, r: FrameResult) -> None:
    """Part labels below the store's ``num_classes`` (a frame itself allows up to 29)."""
    if spec.num_classes >= MAX_PART_CLASSES:
        return  # the frame checked its labels against MAX_PART_CLASSES already
    labels = [("part", r.part)] if r.part is not None else []
    labels += [(f"part_patch[{k}]", p) for k, p in enumerate(r.part_patch or ())]
    for name, values in labels:
        if values.size and int(values.max()) >= spec.num_classes:
            msg = (
                f"frame {r.index}: {name}: expected labels 0..{spec.num_classes - 1} "
                f"(the store's num_classes={spec.num_classes}), got {int(values.max())}; "
                f"Sapiens2 results need a store made with StoreSpec(num_classes=29)"
            )
            raise SchemaMismatchError(msg)


def _check_patches_against_spec(spec: StoreSpec, r: FrameResult) -> None:
    """Per-person patches only in a per-person store (and no frame maps there), each patch
    within the store's ``patch_size`` and each patch box within the source frame."""
    if not spec.per_person:
        if r.patch_tasks:
            msg = (
                f"frame {r.index}: per-person patches for {r.patch_tasks} in a store of frame "
                f"maps (its spec has no patch_size); create the store with "
                f"StoreSpec(patch_size=...) or send frame maps"
            )
            raise SchemaMismatchError(msg)
        return
    if r.map_size is not None:
        maps = tuple(t for t in r.tasks if t not in r.patch_tasks and t != "pose")
        msg = (
            f"frame {r.index}: frame maps for {maps} in a per-person store (patch_size "
            f"{spec.patch_size}); send per-person patches (part_patch, depth_patch, ...)"
        )
        raise SchemaMismatchError(msg)
    assert spec.patch_size is not None
    hs, ws = spec.patch_size
    for name in ("part_patch", "depth_patch", "normal_patch", "pointmap_patch"):
        for k, a in enumerate(getattr(r, name) or ()):
            if a.shape[0] > hs or a.shape[1] > ws:
                msg = (
                    f"frame {r.index}: {name}[{k}] of {a.shape[0]}x{a.shape[1]} does not fit "
                    f"the store's patch_size of {hs}x{ws}; reduce it to at most that or "
                    f"create the store with a larger patch_size"
                )
                raise SchemaMismatchError(msg)
    if r.patch_box is not None and r.num_persons:
        box = r.patch_box
        if int(box[:, 2].max()) > spec.source_width or int(box[:, 3].max()) > spec.source_height:
            msg = (
                f"frame {r.index}: patch_box reaches past the source frame of "
                f"{spec.source_width}x{spec.source_height} (width x height), got "
                f"x1 up to {int(box[:, 2].max())}, y1 up to {int(box[:, 3].max())}"
            )
            raise SchemaMismatchError(msg)


def _patch_hw(patches: tuple[npt.NDArray[Any], ...]) -> npt.NDArray[np.int32]:
    """(P, 2) int32 (h, w) of each patch."""
    return np.array([a.shape[:2] for a in patches], dtype=np.int32).reshape(len(patches), 2)


def _encode_patches(r: FrameResult, persons: Rows) -> Patches:
    """Add the per-person rows of ``r``'s patches to ``persons``; return the patches."""
    patches: Patches = {}
    if r.patch_box is not None:
        persons["persons/patch_box"] = r.patch_box.astype(np.int32)
    if r.part_patch is not None and r.fg_patch is not None:
        persons["seg/patch_hw"] = _patch_hw(r.part_patch)
        patches["seg/part_patch"] = r.part_patch
        patches["seg/fg_patch"] = r.fg_patch
    if r.depth_patch is not None and r.depth_scale is not None:
        persons["depth/patch_hw"] = _patch_hw(r.depth_patch)
        persons["depth/scale"] = r.depth_scale.astype(np.float32)
        patches["depth/patch"] = r.depth_patch
    if r.normal_patch is not None:
        persons["normal/patch_hw"] = _patch_hw(r.normal_patch)
        patches["normal/patch"] = r.normal_patch
    if r.pointmap_patch is not None and r.pointmap_scale is not None:
        persons["pointmap/patch_hw"] = _patch_hw(r.pointmap_patch)
        persons["pointmap/scale"] = r.pointmap_scale.astype(np.float32)
        patches["pointmap/patch"] = r.pointmap_patch
    return patches


def _encode_float16(index: int, name: str, values: npt.NDArray[Any]) -> npt.NDArray[np.float16]:
    """``values`` as float16, non-finite values as NaN; |values| beyond float16 raise."""
    finite = np.isfinite(values)
    peak = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    if peak > FLOAT16_MAX:
        msg = (
            f"frame {index}: {name}: expected |values| <= {FLOAT16_MAX:g} (the float16 range "
            f"it is stored in), got {peak:g}; rescale it"
        )
        raise SchemaMismatchError(msg)
    out = values.astype(np.float16)
    out[~finite] = np.nan
    return out


def _encode_normal(index: int, normal: npt.NDArray[Any]) -> npt.NDArray[np.int8]:
    q = np.multiply(normal, NORMAL_SCALE, dtype=np.float32)
    np.rint(q, out=q)
    finite = np.isfinite(q)
    if not finite.all():
        q[~finite] = 0.0
    if q.size and (float(q.min()) < -NORMAL_SCALE - 0.5 or float(q.max()) > NORMAL_SCALE + 0.5):
        msg = f"frame {index}: normal components must lie in [-1, 1] (unit vectors)"
        raise SchemaMismatchError(msg)
    np.clip(q, -NORMAL_SCALE, NORMAL_SCALE, out=q)
    return q.astype(np.int8)


def encode_frame(layout: ZarrLayout, r: FrameResult) -> EncodedFrame:
    """Validate ``r`` against the store's spec and convert it to on-disk dtypes."""
    _check_against_spec(layout, r)
    spec, p = layout.spec, r.num_persons
    persons: Rows = {
        "persons/frame": np.full(p, r.index, np.int64),
        "persons/track_id": r.track_id.astype(np.int64),
        "persons/box_xyxy": r.box_xyxy.astype(np.float32),
        "persons/score": r.score.astype(np.float32),
    }
    if r.keypoints_xy is not None and r.keypoint_score is not None:
        kp = np.rint(r.keypoints_xy.astype(np.float64) * KEYPOINT_GRID) / KEYPOINT_GRID
        persons["pose/keypoints_xy"] = kp.astype(np.float32)
        persons["pose/keypoint_score"] = r.keypoint_score.astype(np.float16)
    maps: Rows = {}
    h, w = spec.height, spec.width
    if r.part is not None and r.person_map is not None:
        maps["seg/part"] = _resample(r.part, h, w).astype(np.uint8)
        maps["seg/person"] = _resample(r.person_map, h, w).astype(np.uint16)
    if r.depth is not None:
        maps["depth/relative"] = _encode_float16(r.index, "depth", _resample(r.depth, h, w))
    if r.normal is not None:
        maps["normal/xyz"] = _encode_normal(r.index, _resample(r.normal, h, w))
    if r.pointmap is not None:
        xyz = _resample(r.pointmap, h, w)
        maps["pointmap/xyz"] = _encode_float16(r.index, "pointmap", xyz)
    patches = _encode_patches(r, persons)
    pts = PTS_UNKNOWN if r.pts is None else int(r.pts)
    return EncodedFrame(
        index=r.index,
        scalars=(int(r.source_index), pts, float(r.time_s)),
        persons=persons,
        maps=maps,
        status=FRAME_STATUS[r.status],
        patches=patches,
    )


def assemble_block(layout: ZarrLayout, block: int, frames: Sequence[EncodedFrame]) -> Rows:
    """Return full-block rows for every array but the pixel arrays: frames ``block*B ..`` then
    fill values. (Pixel arrays are written packed: ``storage._pixels``.)

    ``frames`` must be the block's first ``len(frames)`` frames, in order.
    """
    spec = layout.spec
    b, r_rows = spec.frames_per_shard, spec.person_rows_per_block
    first = block * b
    if [f.index for f in frames] != list(range(first, first + len(frames))) or not (
        0 < len(frames) <= b
    ):
        got = [f.index for f in frames]
        msg = f"block {block}: expected frames {first}.. in order (at most {b}), got {got}"
        raise SchemaMismatchError(msg)
    out: Rows = {}
    full_maps = len(frames) == b
    for a in layout.arrays:
        if a.packed:
            continue  # a block's segment is GBs of room: its patches are written packed

        shape = a.shape(layout.rows_for_blocks(a, 1))
        if full_maps and a.task is not None and a.axis == "frame":
            out[a.path] = np.empty(shape, dtype=a.dtype)  # every row is overwritten below
        else:
            out[a.path] = np.full(shape, a.fill_value, dtype=a.dtype)
    out["blocks/frames"][0] = len(frames)
    row = 0
    for j, f in enumerate(frames):
        source_index, pts, time_s = f.scalars
        out["frames/source_index"][j] = source_index
        out["frames/pts"][j] = pts
        out["frames/time_s"][j] = time_s
        out["frames/person_offset"][j] = block * r_rows + row
        out["frames/person_count"][j] = f.num_persons
        out["frames/status"][j] = f.status
        for path, values in f.persons.items():
            out[path][row : row + f.num_persons] = values
        for path, values in f.maps.items():
            out[path][j] = values
        row += f.num_persons
    return out


def decode_normal(raw: npt.NDArray[np.int8]) -> npt.NDArray[np.float32]:
    """Dequantise int8 normals to float32 unit vectors (zero vectors stay zero)."""
    n = raw.astype(np.float32)
    sq = np.einsum("...i,...i->...", n, n)[..., None]
    scale = np.zeros_like(sq)
    np.divide(1.0, np.sqrt(sq), out=scale, where=sq > 0)
    n *= scale
    return n


def decode_scaled(
    patches: Sequence[npt.NDArray[Any]], scale: npt.ArrayLike, *, divide: bool
) -> tuple[npt.NDArray[np.float32], ...]:
    """Decode stored float16 patches as float32, each times (depth) or divided by (pointmap:
    raw xyz / s = metric xyz) its person's float32 ``scale``."""
    s = np.asarray(scale, dtype=np.float32)
    if divide:
        return tuple(p.astype(np.float32) / s[k] for k, p in enumerate(patches))
    return tuple(p.astype(np.float32) * s[k] for k, p in enumerate(patches))
