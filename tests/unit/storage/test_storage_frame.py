"""FrameResult validation: clear "expected X, got Y" errors."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext as does_not_raise
from typing import Any

import numpy as np
import pytest

from storage.errors import SchemaMismatchError
from storage.frame import FrameResult
from storage.schema import StoreSpec
from storage.synthetic import synthetic_frame


@pytest.fixture
def good(small_spec: StoreSpec) -> FrameResult:
    return synthetic_frame(small_spec, 5, n_persons=2)


def _replace(r: FrameResult, **changes: Any) -> FrameResult:
    return dataclasses.replace(r, **changes)


@pytest.mark.parametrize(
    ("changes", "expectation"),
    [
        ({}, does_not_raise()),
        ({"index": -1}, pytest.raises(SchemaMismatchError, match="index: expected an int >= 0")),
        ({"pts": None}, does_not_raise()),
        ({"pts": 1.5}, pytest.raises(SchemaMismatchError, match="pts: expected an int or None")),
        ({"time_s": float("nan")}, pytest.raises(SchemaMismatchError, match="finite float")),
        (
            {"track_id": np.array([1.0, 2.0])},
            pytest.raises(
                SchemaMismatchError, match="track_id: expected a dtype of kind signed integer or "
            ),
        ),
        (
            {"track_id": np.array([1, -2])},
            pytest.raises(SchemaMismatchError, match="expected ids >= 0"),
        ),
        (
            {"box_xyxy": np.zeros((2, 5), np.float32)},
            pytest.raises(SchemaMismatchError, match=r"box_xyxy: expected shape \(2, 4\), got"),
        ),
        (
            {"score": np.zeros(3, np.float32)},
            pytest.raises(SchemaMismatchError, match=r"score: expected shape \(2\), got \(3,\)"),
        ),
        (
            {"score": np.array([np.nan, 1], np.float32)},
            pytest.raises(SchemaMismatchError, match="expected finite values"),
        ),
        (
            {"keypoint_score": None},
            pytest.raises(SchemaMismatchError, match="expected both or neither"),
        ),
        (
            {"keypoints_xy": np.zeros((2, 17, 3), np.float32)},
            pytest.raises(SchemaMismatchError, match=r"expected shape \(2, \*, 2\)"),
        ),
        ({"part": np.full((24, 40), 28, np.uint8)}, does_not_raise()),  # Sapiens2: 29 classes
        (
            {"part": np.full((24, 40), 29, np.uint8)},
            pytest.raises(SchemaMismatchError, match=r"labels 0\.\.28, got 29"),
        ),
        (
            {"person_map": np.full((24, 40), 3, np.uint16)},
            pytest.raises(SchemaMismatchError, match=r"values 0..2 \(P=2\), got 3"),
        ),
        (
            {"part": np.zeros((24, 40), np.int8)},
            pytest.raises(
                SchemaMismatchError,
                match="part: expected a dtype of kind unsigned integer, got int8",
            ),
        ),
        (
            {"depth": np.zeros((24, 41), np.float32)},
            pytest.raises(SchemaMismatchError, match=r"depth: expected shape \(24, 40\)"),
        ),
        (
            {"normal": np.zeros((24, 40), np.float32)},
            pytest.raises(SchemaMismatchError, match=r"normal: expected shape \(24, 40, 3\)"),
        ),
        (
            {"depth": [[0.0]]},
            pytest.raises(SchemaMismatchError, match="depth: expected a numpy array, got list"),
        ),
        (
            {"pointmap": np.zeros((24, 40), np.float32)},
            pytest.raises(SchemaMismatchError, match=r"pointmap: expected shape \(24, 40, 3\)"),
        ),
        (
            {"pointmap": np.zeros((24, 40, 3), np.int16)},
            pytest.raises(SchemaMismatchError, match="pointmap: expected a dtype of kind floating"),
        ),
        (
            {"pointmap_patch": (), "pointmap_scale": np.zeros(0, np.float32)},
            pytest.raises(
                SchemaMismatchError, match=r"pointmap: expected frame maps \(pointmap\) "
            ),
        ),
    ],
)
def test_validation(good: FrameResult, changes: dict[str, Any], expectation: Any) -> None:
    with expectation:
        _replace(good, **changes)


def test_error_names_the_frame(good: FrameResult) -> None:
    with pytest.raises(SchemaMismatchError, match=r"^FrameResult\(index=5\): "):
        _replace(good, score=np.zeros(1, np.float32))


def test_zero_persons_and_no_tasks() -> None:
    r = FrameResult(
        index=0, source_index=0, pts=None, time_s=0.0, track_id=np.zeros(0, np.int32),
        box_xyxy=np.zeros((0, 4), np.float32), score=np.zeros(0, np.float32),
    )  # fmt: skip
    assert (r.num_persons, r.tasks, r.map_size) == (0, (), None)


def test_tasks_and_map_size(good: FrameResult) -> None:
    assert good.tasks == ("pose", "seg", "depth", "normal", "pointmap")
    assert good.map_size == (24, 40)
    assert good.pointmap is not None and good.pointmap.shape == (24, 40, 3)
    only = _replace(good, part=None, person_map=None, depth=None, normal=None)
    assert (only.tasks, only.map_size) == (("pose", "pointmap"), (24, 40))


# -- per-person fields (schema v2) -------------------------------------------------------------
PP_SPEC = StoreSpec.for_source(48, 80, num_keypoints=17, patch_size=(24, 16))


@pytest.fixture
def per_person() -> FrameResult:
    r = synthetic_frame(PP_SPEC, 5, n_persons=2)
    assert r.patch_box is not None and r.patch_box[0].tolist() == [31, 12, 37, 30]
    assert r.part_patch is not None and r.part_patch[0].shape == (9, 3)
    assert r.pointmap_patch is not None and r.pointmap_patch[0].shape == (18, 6, 3)
    return r


def _first(r: FrameResult, name: str, value: Any) -> tuple[Any, ...]:
    """``name`` of ``r`` with person 0's patch replaced."""
    return (value, *getattr(r, name)[1:])


def _bad(match: str) -> Any:
    return pytest.raises(SchemaMismatchError, match=match)


PATCH_CASES: list[tuple[str, Any, Any]] = [
    ("ok", lambda r: {}, does_not_raise()),
    ("list", lambda r: {"part_patch": list(r.part_patch)}, does_not_raise()),
    ("no box", lambda r: {"patch_box": None}, _bad(r"patch_box: expected a \(P, 4\) array")),
    (
        "box alone",
        lambda r: {
            "part_patch": None,
            "fg_patch": None,
            "depth_patch": None,
            "depth_scale": None,
            "normal_patch": None,
            "pointmap_patch": None,
            "pointmap_scale": None,
        },
        _bad("patch_box: expected None without any"),
    ),
    ("box shape", lambda r: {"patch_box": r.patch_box[:, :3]}, _bad(r"expected shape \(2, 4\)")),
    (
        "box float",
        lambda r: {"patch_box": r.patch_box.astype(np.float32)},
        _bad("patch_box: expected a dtype of kind signed integer or unsigned"),
    ),
    (
        "box empty",
        lambda r: {"patch_box": np.array([[3, 4, 3, 9], [0, 0, 5, 5]], np.int32)},
        _bad(r"patch_box\[0\]: expected 0 <= x0 < x1 and 0 <= y0 < y1, got \[3, 4, 3, 9\]"),
    ),
    (
        "box negative",
        lambda r: {"patch_box": r.patch_box - np.array([40, 0, 0, 0], np.int32)},
        _bad(r"patch_box\[0\]: expected 0 <= x0"),
    ),
    ("fg alone", lambda r: {"part_patch": None}, _bad("part_patch and fg_patch: expected both")),
    ("scale alone", lambda r: {"depth_scale": None}, _bad("depth_patch and depth_scale")),
    (
        "pointmap scale alone",
        lambda r: {"pointmap_scale": None},
        _bad("pointmap_patch and pointmap_scale: expected both or neither, got one"),
    ),
    (
        "pointmap patch alone",
        lambda r: {"pointmap_patch": None},
        _bad("pointmap_patch and pointmap_scale: expected both or neither, got one"),
    ),
    (
        "count",
        lambda r: {"part_patch": r.part_patch[:1]},
        _bad(r"part_patch: expected a tuple of 2 arrays \(one per person\), got tuple of 1"),
    ),
    (
        "not arrays",
        lambda r: {"normal_patch": np.zeros((2, 4, 4, 3), np.int8)},
        _bad("normal_patch: expected a tuple of 2 arrays .* got ndarray"),
    ),
    (
        "part dtype",
        lambda r: {"part_patch": _first(r, "part_patch", r.part_patch[0].astype(np.int16))},
        _bad(r"part_patch\[0\]: expected dtype uint8, got int16"),
    ),
    (
        "depth dtype",
        lambda r: {"depth_patch": _first(r, "depth_patch", r.depth_patch[0].astype(np.float32))},
        _bad(r"depth_patch\[0\]: expected dtype float16, got float32"),
    ),
    (
        "normal dtype",
        lambda r: {"normal_patch": _first(r, "normal_patch", r.normal_patch[0].astype(np.int16))},
        _bad(r"normal_patch\[0\]: expected dtype int8, got int16"),
    ),
    (
        "normal channels",
        lambda r: {"normal_patch": _first(r, "normal_patch", r.normal_patch[0][..., :2])},
        _bad(r"normal_patch\[0\]: expected shape \(h, w, 3\) with 1 <= h <= 18, 1 <= w <= 6"),
    ),
    (
        "finer than pixels",
        lambda r: {"depth_patch": _first(r, "depth_patch", np.zeros((19, 6), np.float16))},
        _bad(
            r"depth_patch\[0\]: expected shape \(h, w\) with 1 <= h <= 18, 1 <= w <= 6 "
            r"\(patch_box \[31, 12, 37, 30\]\), got \(19, 6\)"
        ),
    ),
    (
        "empty patch",
        lambda r: {"depth_patch": _first(r, "depth_patch", np.zeros((0, 6), np.float16))},
        _bad(r"depth_patch\[0\]: expected shape"),
    ),
    (
        "fg shape",
        lambda r: {"fg_patch": _first(r, "fg_patch", np.zeros((9, 2), np.uint8))},
        _bad(r"fg_patch\[0\]: expected the shape of part_patch\[0\] \(9, 3\), got \(9, 2\)"),
    ),
    (
        "label 28 (Sapiens2)",
        lambda r: {"part_patch": _first(r, "part_patch", np.full((9, 3), 28, np.uint8))},
        does_not_raise(),
    ),
    (
        "labels",
        lambda r: {"part_patch": _first(r, "part_patch", np.full((9, 3), 29, np.uint8))},
        _bad(r"part_patch\[0\]: expected labels 0..28, got 29"),
    ),
    (
        "inf depth",
        lambda r: {"depth_patch": _first(r, "depth_patch", np.full((2, 2), np.inf, np.float16))},
        _bad(r"depth_patch\[0\]: expected finite values or NaN, got inf"),
    ),
    (
        "pointmap dtype",
        lambda r: {
            "pointmap_patch": _first(r, "pointmap_patch", r.pointmap_patch[0].astype(np.float32))
        },
        _bad(r"pointmap_patch\[0\]: expected dtype float16, got float32"),
    ),
    (
        "pointmap channels",
        lambda r: {"pointmap_patch": _first(r, "pointmap_patch", r.pointmap_patch[0][..., :2])},
        _bad(r"pointmap_patch\[0\]: expected shape \(h, w, 3\) with 1 <= h <= 18, 1 <= w <= 6"),
    ),
    (
        "pointmap past its box",
        lambda r: {"pointmap_patch": _first(r, "pointmap_patch", np.zeros((18, 7, 3), np.float16))},
        _bad(r"pointmap_patch\[0\]: expected shape .* \(patch_box \[31, 12, 37, 30\]\), got"),
    ),
    (
        "pointmap NaN",
        lambda r: {
            "pointmap_patch": _first(r, "pointmap_patch", np.full((2, 2, 3), np.nan, np.float16))
        },
        does_not_raise(),
    ),
    (
        "inf pointmap",
        lambda r: {
            "pointmap_patch": _first(r, "pointmap_patch", np.full((2, 2, 3), -np.inf, np.float16))
        },
        _bad(r"pointmap_patch\[0\]: expected finite values or NaN, got inf"),
    ),
    (
        "pointmap scale zero",
        lambda r: {"pointmap_scale": np.array([0.5, 0.0], np.float32)},
        _bad("pointmap_scale: expected finite values != 0"),
    ),
    (
        "pointmap scale inf",
        lambda r: {"pointmap_scale": np.array([np.inf, 1.0], np.float32)},
        _bad("pointmap_scale: expected finite values != 0"),
    ),
    (
        "pointmap scale negative (an untrained model's) is data",
        lambda r: {"pointmap_scale": np.array([-0.5, 1.0], np.float32)},
        does_not_raise(),
    ),
    (
        "pointmap scale shape",
        lambda r: {"pointmap_scale": np.ones((2, 1), np.float32)},
        _bad(r"pointmap_scale: expected shape \(2\), got \(2, 1\)"),
    ),
    (
        "pointmap scale ints",
        lambda r: {"pointmap_scale": np.ones(2, np.int32)},
        _bad("pointmap_scale: expected a dtype of kind floating, got int32"),
    ),
    (
        "scale zero",
        lambda r: {"depth_scale": np.array([1.0, 0.0], np.float32)},
        _bad("depth_scale: expected finite values > 0"),
    ),
    (
        "scale nan",
        lambda r: {"depth_scale": np.array([1.0, np.nan], np.float32)},
        _bad("depth_scale: expected finite values > 0"),
    ),
    (
        "scale shape",
        lambda r: {"depth_scale": np.ones(3, np.float32)},
        _bad(r"depth_scale: expected shape \(2\)"),
    ),
    (
        "maps and patches",
        lambda r: {"depth": np.zeros((48, 80), np.float32)},
        _bad(r"depth: expected frame maps \(depth\) or per-person patches .*, got both"),
    ),
    (
        "seg maps and patches",
        lambda r: {
            "part": np.zeros((48, 80), np.uint8),
            "person_map": np.zeros((48, 80), np.uint16),
        },
        _bad(r"seg: expected frame maps \(part, person_map\) or per-person patches"),
    ),
    (
        "pointmap maps and patches",
        lambda r: {"pointmap": np.zeros((48, 80, 3), np.float32)},
        _bad(
            r"pointmap: expected frame maps \(pointmap\) or per-person patches "
            r"\(pointmap_patch, pointmap_scale\), got both"
        ),
    ),
]


@pytest.mark.parametrize(
    ("changes", "expectation"), [c[1:] for c in PATCH_CASES], ids=[c[0] for c in PATCH_CASES]
)
def test_patch_validation(per_person: FrameResult, changes: Any, expectation: Any) -> None:
    with expectation:
        _replace(per_person, **changes(per_person))


def test_patch_tasks_and_tuples(per_person: FrameResult) -> None:
    assert per_person.tasks == ("pose", "seg", "depth", "normal", "pointmap")
    assert per_person.patch_tasks == ("seg", "depth", "normal", "pointmap")
    assert per_person.map_size is None
    r = _replace(
        per_person,
        normal_patch=list(per_person.normal_patch),
        pointmap_patch=list(per_person.pointmap_patch),
        depth_patch=None,
        depth_scale=None,
    )
    assert isinstance(r.normal_patch, tuple) and isinstance(r.pointmap_patch, tuple)
    assert r.tasks == ("pose", "seg", "normal", "pointmap")


def test_patch_errors_name_the_frame(per_person: FrameResult) -> None:
    with pytest.raises(SchemaMismatchError, match=r"^FrameResult\(index=5\): depth_scale"):
        _replace(per_person, depth_scale=np.zeros(2, np.float32))
    with pytest.raises(SchemaMismatchError, match=r"^FrameResult\(index=5\): pointmap_scale"):
        _replace(per_person, pointmap_scale=np.zeros(2, np.float32))


def test_zero_persons_with_patches() -> None:
    r = synthetic_frame(PP_SPEC, 0, n_persons=0)
    assert r.patch_box is not None and r.patch_box.shape == (0, 4)
    assert r.tasks == ("pose", "seg", "depth", "normal", "pointmap") and r.part_patch == ()
    assert r.pointmap_patch == () and r.pointmap_scale is not None and r.pointmap_scale.size == 0
