"""StoreSpec validation, round trips and the derived Zarr layout."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from typing import Any

import numpy as np
import pytest

from storage.errors import SchemaMismatchError
from storage.schema import (
    DENSE_TASKS,
    NUM_PART_CLASSES,
    PIXEL_CHUNK,
    TASKS,
    StoreSpec,
    ZarrLayout,
    output_size,
)

BASE: dict[str, Any] = {"height": 36, "width": 64, "source_height": 72, "source_width": 128}


@pytest.mark.parametrize(
    ("overrides", "expectation"),
    [
        ({}, does_not_raise()),
        ({"tasks": ("depth",)}, does_not_raise()),
        ({"tasks": ("pointmap",)}, does_not_raise()),
        ({"tasks": ()}, pytest.raises(SchemaMismatchError, match="non-empty")),
        ({"tasks": ("pose", "pose")}, pytest.raises(SchemaMismatchError, match="duplicate")),
        ({"tasks": ("flow",)}, pytest.raises(SchemaMismatchError, match="got \\('flow',\\)")),
        ({"num_keypoints": 133}, does_not_raise()),
        ({"num_keypoints": 20}, pytest.raises(SchemaMismatchError, match="got 20")),
        ({"height": 0}, pytest.raises(SchemaMismatchError, match="height: expected a positive")),
        ({"height": 80}, pytest.raises(SchemaMismatchError, match="only downscaling")),
        ({"frames_per_shard": 0}, pytest.raises(SchemaMismatchError, match=r"1\.\.256, got 0")),
        ({"max_persons_per_frame": 0}, pytest.raises(SchemaMismatchError, match="got 0")),
        ({"num_classes": 29}, does_not_raise()),
        (
            {"num_classes": 30},
            pytest.raises(
                SchemaMismatchError, match=r"num_classes: expected one of \(28, 29\), got 30"
            ),
        ),
        ({"num_classes": True}, pytest.raises(SchemaMismatchError, match="got True")),
    ],
)
def test_store_spec_validation(overrides: dict[str, Any], expectation: Any) -> None:
    with expectation:
        StoreSpec(**{**BASE, **overrides})


def test_tasks_are_kept_in_canonical_order() -> None:
    spec = StoreSpec(**BASE, tasks=("pointmap", "normal", "pose"))
    assert spec.tasks == ("pose", "normal", "pointmap")
    assert TASKS == ("pose", "seg", "depth", "normal", "pointmap")
    assert DENSE_TASKS == ("seg", "depth", "normal", "pointmap")


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
    xyz = by_path["pointmap/xyz"]  # laid out like normal/xyz, stored like depth/relative
    assert (xyz.dtype, xyz.row_shape, xyz.codec) == ("float16", (36, 64, 3), "blosc")
    assert np.isnan(xyz.fill_value) and xyz.dims == ("frame", "y", "x", "component")
    assert xyz.transpose == by_path["normal/xyz"].transpose == (0, 3, 1, 2)
    assert by_path["pose/keypoints_xy"].row_shape == (spec.num_keypoints, 2)
    assert spec.person_rows_per_block == 128


@pytest.mark.parametrize(
    ("patch_size", "expectation"),
    [
        (None, does_not_raise()),
        ((1024, 768), does_not_raise()),
        ([16, 12], does_not_raise()),
        ((0, 768), pytest.raises(SchemaMismatchError, match=r"patch_size: expected None or")),
        ((16,), pytest.raises(SchemaMismatchError, match=r"got \(16,\)")),
        ((16.0, 12), pytest.raises(SchemaMismatchError, match="two ints >= 1")),
        ((True, 12), pytest.raises(SchemaMismatchError, match="two ints >= 1")),
        ("16x12", pytest.raises(SchemaMismatchError, match="got '16x12'")),
    ],
)
def test_patch_size_validation(patch_size: Any, expectation: Any) -> None:
    with expectation:
        spec = StoreSpec(**BASE, patch_size=patch_size)
        assert spec.patch_size is None or isinstance(spec.patch_size, tuple)


def test_patch_size_round_trips_as_a_list() -> None:
    spec = StoreSpec(**BASE, patch_size=(1024, 768))
    raw = spec.to_dict()
    assert raw["patch_size"] == [1024, 768]
    assert StoreSpec.from_dict(raw) == spec
    old = {k: v for k, v in StoreSpec(**BASE).to_dict().items() if k != "patch_size"}
    assert StoreSpec.from_dict(old).patch_size is None  # a v1 layout has no such key


def test_per_person_layout() -> None:
    spec = StoreSpec(**BASE, patch_size=(32, 24), frames_per_shard=4, max_persons_per_frame=8)
    layout = ZarrLayout.from_spec(spec)
    by_path = layout.by_path()
    assert not {"seg/part", "seg/person", "depth/relative", "normal/xyz"} & set(by_path)
    r = spec.person_rows_per_block
    px = spec.pixels_per_block
    assert px >= r * 32 * 24 and px % PIXEL_CHUNK == 0  # room for every row at full size
    expected = {
        "persons/patch_box": ("person", (4,), "int32", -1, False),
        "seg/part_patch": ("pixel", (), "uint8", 0, True),
        "seg/fg_patch": ("pixel", (), "uint8", 0, True),
        "seg/patch_hw": ("person", (2,), "int32", 0, False),
        "depth/patch": ("pixel", (), "float16", None, True),
        "depth/scale": ("person", (), "float32", None, False),
        "depth/patch_hw": ("person", (2,), "int32", 0, False),
        "normal/patch": ("pixel", (3,), "int8", 0, True),
        "normal/patch_hw": ("person", (2,), "int32", 0, False),
        "pointmap/patch": ("pixel", (3,), "float16", None, True),
        "pointmap/scale": ("person", (), "float32", None, False),
        "pointmap/patch_hw": ("person", (2,), "int32", 0, False),
    }
    for path, (axis, row_shape, dtype, fill, packed) in expected.items():
        a = by_path[path]
        assert (a.axis, a.row_shape, a.dtype, a.packed) == (axis, row_shape, dtype, packed), path
        assert fill is None or a.fill_value == fill, path
        if packed:  # chunks of PIXEL_CHUNK pixels, one shard per block
            assert (a.chunk_rows, a.shard_rows) == (PIXEL_CHUNK, px), path
    assert by_path["normal/patch"].transpose == by_path["pointmap/patch"].transpose == (1, 0)
    assert by_path["pointmap/patch"].dims == ("pixel", "component")
    assert by_path["pointmap/patch"].codec == by_path["depth/patch"].codec == "blosc-fast"
    assert np.isnan(by_path["pointmap/patch"].fill_value)
    for a in layout.arrays:
        assert (a.shard_rows or a.chunk_rows) == layout.rows_for_blocks(a, 1), a.path


def test_patch_size_without_dense_tasks_changes_nothing() -> None:
    spec = StoreSpec(**BASE, tasks=("pose",), patch_size=(32, 24))
    assert not spec.per_person
    plain = ZarrLayout.from_spec(StoreSpec(**BASE, tasks=("pose",)))
    assert [a.path for a in ZarrLayout.from_spec(spec).arrays] == [a.path for a in plain.arrays]


@pytest.mark.parametrize("patch_size", [None, (32, 24)])
@pytest.mark.parametrize("num_classes", [28, 29])
def test_part_arrays_record_the_class_count(
    num_classes: int, patch_size: tuple[int, int] | None
) -> None:
    spec = StoreSpec(**BASE, tasks=("seg",), num_classes=num_classes, patch_size=patch_size)
    path = "seg/part" if patch_size is None else "seg/part_patch"
    assert ZarrLayout.from_spec(spec).by_path()[path].attributes == {"classes": num_classes}


def test_num_classes_round_trips_and_older_specs_load() -> None:
    v2 = StoreSpec(**BASE, tasks=("seg", "pointmap"), num_classes=29, patch_size=(32, 24))
    assert v2.to_dict()["num_classes"] == 29
    assert StoreSpec.from_dict(v2.to_dict()) == v2
    # A spec written before num_classes existed (older v2 and v1 stores) has 28 classes; and a
    # 28-class spec records exactly those keys, so older v2 readers still read its store.
    older = {
        "tasks": ["pose", "seg", "depth", "normal"], "num_keypoints": 308, "height": 36,
        "width": 64, "source_height": 72, "source_width": 128, "frames_per_shard": 8,
        "max_persons_per_frame": 128, "patch_size": None,
    }  # fmt: skip
    spec = StoreSpec.from_dict(older)
    assert spec.num_classes == NUM_PART_CLASSES == 28
    assert spec.to_dict() == older
    assert StoreSpec.from_dict({**older, "num_classes": 28}) == spec
