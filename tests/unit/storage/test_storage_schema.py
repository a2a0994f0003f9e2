"""StoreSpec validation, round trips and the derived Zarr layout."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from typing import Any

import pytest

from storage.errors import SchemaMismatchError
from storage.schema import TASKS, StoreSpec, ZarrLayout, output_size

BASE: dict[str, Any] = {"height": 36, "width": 64, "source_height": 72, "source_width": 128}


@pytest.mark.parametrize(
    ("overrides", "expectation"),
    [
        ({}, does_not_raise()),
        ({"tasks": ("depth",)}, does_not_raise()),
        ({"tasks": ()}, pytest.raises(SchemaMismatchError, match="non-empty")),
        ({"tasks": ("pose", "pose")}, pytest.raises(SchemaMismatchError, match="duplicate")),
        ({"tasks": ("flow",)}, pytest.raises(SchemaMismatchError, match="got \\('flow',\\)")),
        ({"num_keypoints": 133}, does_not_raise()),
        ({"num_keypoints": 20}, pytest.raises(SchemaMismatchError, match="got 20")),
        ({"height": 0}, pytest.raises(SchemaMismatchError, match="height: expected a positive")),
        ({"height": 80}, pytest.raises(SchemaMismatchError, match="only downscaling")),
        ({"frames_per_shard": 0}, pytest.raises(SchemaMismatchError, match=r"1\.\.256, got 0")),
        ({"max_persons_per_frame": 0}, pytest.raises(SchemaMismatchError, match="got 0")),
    ],
)
def test_store_spec_validation(overrides: dict[str, Any], expectation: Any) -> None:
    with expectation:
        StoreSpec(**{**BASE, **overrides})


def test_tasks_are_kept_in_canonical_order() -> None:
    spec = StoreSpec(**BASE, tasks=("normal", "pose"))
    assert spec.tasks == ("pose", "normal")


def test_round_trip_and_unknown_keys() -> None:
    spec = StoreSpec(**BASE, tasks=("seg", "depth"), frames_per_shard=16)
    assert StoreSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SchemaMismatchError, match=r"unknown StoreSpec key\(s\) \['colour'\]"):
        StoreSpec.from_dict({**spec.to_dict(), "colour": 1})


@pytest.mark.parametrize(
    ("source", "downscale", "expected"),
    [((720, 1280), 1, (720, 1280)), ((720, 1280), 2, (360, 640)), ((5, 5), 100, (1, 1))],
)
def test_output_size(source: tuple[int, int], downscale: float, expected: tuple[int, int]) -> None:
    assert output_size(*source, downscale) == expected


def test_output_size_rejects_upscaling() -> None:
    with pytest.raises(SchemaMismatchError, match="downscale must be >= 1"):
        output_size(10, 10, 0.5)


@pytest.mark.parametrize("task", TASKS)
def test_layout_has_only_enabled_task_arrays(task: str) -> None:
    spec = StoreSpec(**BASE, tasks=(task,))
    layout = ZarrLayout.from_spec(spec)
    tasks = {a.task for a in layout.arrays}
    assert tasks == {None, task}
    assert {a.path for a in layout.arrays if a.task is None} == {
        "frames/source_index", "frames/pts", "frames/time_s", "frames/person_offset",
        "frames/person_count", "frames/status", "blocks/frames", "persons/frame",
        "persons/track_id", "persons/box_xyxy", "persons/score",
    }  # fmt: skip


def test_layout_blocks_align_on_every_axis() -> None:
    spec = StoreSpec(**BASE, frames_per_shard=8, max_persons_per_frame=16)
    layout = ZarrLayout.from_spec(spec)
    for a in layout.arrays:
        unit = layout.rows_for_blocks(a, 1)
        write_unit = a.shard_rows or a.chunk_rows
        assert write_unit == unit, a.path  # one block = exactly one storage object per array
    by_path = layout.by_path()
    assert by_path["normal/xyz"].dtype == "int8"
    assert by_path["depth/relative"].dtype == "float16"
    assert by_path["pose/keypoints_xy"].row_shape == (spec.num_keypoints, 2)
    assert spec.person_rows_per_block == 128
