"""Validation helpers of :class:`storage.frame.FrameResult` ("expected X, got Y" errors).

The per-person fields (schema v2) are checked here: :func:`check_patches`. Part labels are
checked against the largest supported class count (29, Sapiens2); a store checks its own
``num_classes`` when a frame is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from storage.errors import SchemaMismatchError
from storage.schema import MAX_PART_CLASSES

if TYPE_CHECKING:
    from storage.frame import FrameResult

PATCH_FIELDS = ("part_patch", "fg_patch", "depth_patch", "normal_patch", "pointmap_patch")
"""Per-person fields that hold one array per person."""

_MAP_OR_PATCH = (
    ("seg", ("part", "person_map"), ("part_patch", "fg_patch")),
    ("depth", ("depth",), ("depth_patch", "depth_scale")),
    ("normal", ("normal",), ("normal_patch",)),
    ("pointmap", ("pointmap",), ("pointmap_patch", "pointmap_scale")),
)
"""Per dense task: its frame-map fields and its per-person fields (one or the other)."""

_PAIRS = (
    ("part_patch", "fg_patch"),
    ("depth_patch", "depth_scale"),
    ("pointmap_patch", "pointmap_scale"),
)
"""Per-person fields that come together or not at all."""

_PATCH_DTYPES = (
    ("part_patch", np.uint8, False),
    ("fg_patch", np.uint8, False),
    ("depth_patch", np.float16, False),
    ("normal_patch", np.int8, True),
    ("pointmap_patch", np.float16, True),
)
"""Each patch field's dtype and whether its pixels are 3-vectors."""


def fail(index: int, message: str) -> SchemaMismatchError:
    """The error of frame ``index``: ``FrameResult(index=..): message``."""
    return SchemaMismatchError(f"FrameResult(index={index}): {message}")


def check_array(
    index: int,
    name: str,
    value: Any,
    shape: tuple[int | None, ...],
    kinds: str,
) -> None:
    """Check that ``value`` is an ndarray of dtype kind in ``kinds`` and the given shape."""
    if not isinstance(value, np.ndarray):
        raise fail(index, f"{name}: expected a numpy array, got {type(value).__name__}")
    want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    if value.ndim != len(shape) or any(
        s is not None and s != v for s, v in zip(shape, value.shape, strict=True)
    ):
        raise fail(index, f"{name}: expected shape {want}, got {value.shape}")
    if value.dtype.kind not in kinds:
        names = {"f": "floating", "i": "signed integer", "u": "unsigned integer", "b": "bool"}
        want_kind = " or ".join(names[k] for k in kinds)
        raise fail(index, f"{name}: expected a dtype of kind {want_kind}, got {value.dtype}")


def normalise_patches(r: FrameResult) -> None:
    """Turn list-valued patch fields into tuples (the frame is frozen and must stay so)."""
    for name in PATCH_FIELDS:
        value = getattr(r, name)
        if isinstance(value, list):
            object.__setattr__(r, name, tuple(value))


def check_patches(r: FrameResult) -> None:
    """Check the per-person fields: pairs present together, no task both as maps and patches,
    boxes, then each person's patch (dtype, shape within its box, labels, no inf) and the
    per-person scales."""
    i = r.index
    for a, b in _PAIRS:
        if (getattr(r, a) is None) != (getattr(r, b) is None):
            raise fail(i, f"{a} and {b}: expected both or neither, got one")
    for task, maps, patches in _MAP_OR_PATCH:
        if any(getattr(r, m) is not None for m in maps) and getattr(r, patches[0]) is not None:
            msg = (
                f"{task}: expected frame maps ({', '.join(maps)}) or per-person patches "
                f"({', '.join(patches)}), got both"
            )
            raise fail(i, msg)
    any_patch = any(getattr(r, name) is not None for name in PATCH_FIELDS)
    if r.patch_box is None:
        if any_patch:
            raise fail(i, "patch_box: expected a (P, 4) array with the *_patch fields, got None")
        return
    if not any_patch:
        raise fail(i, "patch_box: expected None without any *_patch field, got an array")
    box = _check_boxes(r, r.patch_box)
    for name in ("depth_scale", "pointmap_scale"):
        _check_scale(r, name)
    for name, dtype, channels in _PATCH_DTYPES:
        _check_patch_list(r, name, np.dtype(dtype), channels, box)
    _check_seg_patches(r)
    for name in ("depth_patch", "pointmap_patch"):
        for k, values in enumerate(getattr(r, name) or ()):
            if np.isinf(values).any():
                raise fail(i, f"{name}[{k}]: expected finite values or NaN, got inf")


def _check_boxes(r: FrameResult, patch_box: Any) -> np.ndarray:
    """Check ``patch_box`` ((P, 4) ints, non-empty rectangles); return it as int64."""
    check_array(r.index, "patch_box", patch_box, (r.num_persons, 4), "iu")
    box: np.ndarray = patch_box.astype(np.int64)
    bad = (box[:, 0] < 0) | (box[:, 1] < 0) | (box[:, 0] >= box[:, 2]) | (box[:, 1] >= box[:, 3])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        msg = f"patch_box[{k}]: expected 0 <= x0 < x1 and 0 <= y0 < y1, got {box[k].tolist()}"
        raise fail(r.index, msg)
    return box


def _check_scale(r: FrameResult, name: str) -> None:
    """Check a per-person scale field: None, or (P,) finite floats, > 0 for ``depth_scale``
    (a largest |depth|) and non-zero for ``pointmap_scale`` (the model's own output, which an
    untrained model may give negative: it is data, stored as given)."""
    scale = getattr(r, name)
    if scale is None:
        return
    check_array(r.index, name, scale, (r.num_persons,), "f")
    positive = name == "depth_scale"
    ok = (scale > 0) if positive else (scale != 0)
    if not (np.isfinite(scale).all() and ok.all()):
        want = "> 0" if positive else "!= 0"
        raise fail(r.index, f"{name}: expected finite values {want}, got {scale}")


def _check_seg_patches(r: FrameResult) -> None:
    """``fg_patch`` shaped like ``part_patch``; labels below the largest class count."""
    if r.part_patch is None or r.fg_patch is None:
        return
    for k, (part, fg) in enumerate(zip(r.part_patch, r.fg_patch, strict=True)):
        if part.shape != fg.shape:
            msg = f"fg_patch[{k}]: expected the shape of part_patch[{k}] {part.shape}, got "
            raise fail(r.index, msg + str(fg.shape))
        if part.size and int(part.max()) >= MAX_PART_CLASSES:
            msg = f"part_patch[{k}]: expected labels 0..{MAX_PART_CLASSES - 1}, got "
            raise fail(r.index, msg + str(part.max()))


def _check_patch_list(
    r: FrameResult, name: str, dtype: np.dtype, channels: bool, box: np.ndarray
) -> None:
    """Check one ``*_patch`` field: a tuple of P arrays of ``dtype``, (h, w[, 3]) each, with
    1 <= h <= y1 - y0 and 1 <= w <= x1 - x0 of the person's patch box."""
    value, i, p = getattr(r, name), r.index, r.num_persons
    if value is None:
        return
    if not isinstance(value, tuple) or len(value) != p:
        got = type(value).__name__
        if isinstance(value, tuple):
            got += f" of {len(value)}"
        raise fail(i, f"{name}: expected a tuple of {p} arrays (one per person), got {got}")
    for k, a in enumerate(value):
        if not isinstance(a, np.ndarray):
            raise fail(i, f"{name}[{k}]: expected a numpy array, got {type(a).__name__}")
        if a.dtype != dtype:
            raise fail(i, f"{name}[{k}]: expected dtype {dtype}, got {a.dtype}")
        bh, bw = int(box[k, 3] - box[k, 1]), int(box[k, 2] - box[k, 0])
        ok = a.ndim == (3 if channels else 2) and (not channels or a.shape[2] == 3)
        if not ok or not (1 <= a.shape[0] <= bh and 1 <= a.shape[1] <= bw):
            msg = (
                f"{name}[{k}]: expected shape (h, w{', 3' if channels else ''}) with "
                f"1 <= h <= {bh}, 1 <= w <= {bw} (patch_box {box[k].tolist()}), got {a.shape}"
            )
            raise fail(i, msg)
