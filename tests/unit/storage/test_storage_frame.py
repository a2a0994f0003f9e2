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
        (
            {"part": np.full((24, 40), 28, np.uint8)},
            pytest.raises(SchemaMismatchError, match=r"labels 0\.\.27, got 28"),
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
    assert good.tasks == ("pose", "seg", "depth", "normal")
    assert good.map_size == (24, 40)
