"""Comparing FrameResults field by field: frame maps and per-person patches alike."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_FIELDS = ("keypoints_xy", "keypoint_score", "depth", "normal")
PATCH_FIELDS = ("part_patch", "fg_patch", "depth_patch", "normal_patch")
ALL_FIELDS = (*FLOAT_FIELDS, "part", "person_map", "patch_box", "depth_scale", *PATCH_FIELDS)


def _flat(value: Any) -> np.ndarray | None:
    """One array for a field: tuples of per-person patches are concatenated (their shapes are
    compared separately)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return np.concatenate([np.ravel(v) for v in value]) if value else np.zeros(0)
    return np.asarray(value)


def _shapes(value: Any) -> list[tuple[int, ...]] | None:
    return [v.shape for v in value] if isinstance(value, tuple) else None


def assert_results_equal(a: Any, b: Any, *, identity: bool = True) -> None:
    """Every result field of two FrameResults is bitwise equal (or absent from both); their
    store indices may differ, and with ``identity=False`` their track ids too."""
    names = ("track_id", "box_xyxy", "score") if identity else ("box_xyxy", "score")
    for name in (*names, *ALL_FIELDS):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is None:
            continue
        assert _shapes(x) == _shapes(y), name
        fx, fy = _flat(x), _flat(y)
        assert fx.dtype == fy.dtype and fx.tobytes() == fy.tobytes(), name


def assert_results_close(a: Any, b: Any, *, atol: float = 1e-4) -> None:
    """Two FrameResults agree up to float rounding: floats within ``atol``; labels where no
    argmax tie flips (99.9 %); quantised patches within one step of their grid."""
    np.testing.assert_array_equal(a.track_id, b.track_id)
    for name in ALL_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is None:
            continue
        assert _shapes(x) == _shapes(y), name
        fx, fy = _flat(x), _flat(y)
        if name in ("part", "part_patch"):
            assert fx.size == 0 or (fx == fy).mean() > 0.999, name
        elif name in ("person_map", "patch_box"):
            np.testing.assert_array_equal(fx, fy, err_msg=name)
        elif name in ("fg_patch", "normal_patch"):
            assert fx.size == 0 or np.abs(fx.astype(int) - fy.astype(int)).max() <= 1, name
        elif name == "depth_patch":
            np.testing.assert_allclose(fx.astype(np.float32), fy, rtol=2e-3, atol=2e-3)
        else:
            np.testing.assert_allclose(fx, fy, atol=atol, rtol=1e-5, err_msg=name)
