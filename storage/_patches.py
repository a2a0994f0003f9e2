"""Reading the per-person arrays of a schema-v2 store and composing frame maps from them.

Used by :class:`storage.reader.ResultReader` for stores whose spec has a ``patch_size``.
A person's patch is one contiguous range of each pixel array (``storage._pixels``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from storage import _pixels
from storage._encode import decode_normal, decode_scaled
from storage.compose import compose_frame_maps
from storage.results import FrameTable, PersonPatches
from storage.schema import StoreSpec, Task

Array = npt.NDArray[Any]

_MAP_FIELDS: dict[Task, tuple[str, ...]] = {
    "seg": ("part", "person_map"),
    "depth": ("depth",),
    "normal": ("normal",),
    "pointmap": ("pointmap",),
}


def _gather(array: zarr.Array[Any], rows: Array) -> Array:
    """``array[rows]`` for small per-row arrays: one read of the span, then a selection."""
    if rows.size == 0:
        return np.zeros((0, *array.shape[1:]), array.dtype)
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    picked: Array = np.asarray(array[lo:hi])[rows - lo]
    return picked


def read_patches(
    arrays: Mapping[str, zarr.Array[Any]],
    rows: Array,
    tasks: Sequence[Task],
    spec: StoreSpec,
) -> PersonPatches:
    """The patches of the dense ``tasks`` of physical person ``rows`` (ascending), decoded."""
    fields: dict[str, Any] = {"patch_box": _gather(arrays["persons/patch_box"], rows)}
    per_block, seg = spec.person_rows_per_block, spec.pixels_per_block

    def read(path: str, task: Task) -> tuple[list[Array], Array]:
        hw_array = arrays[f"{task}/patch_hw"]
        starts, sizes = _pixels.pixel_spans(hw_array, rows, per_block, seg)
        hw = _gather(hw_array, rows)
        return _pixels.read_packed(arrays[path], starts, sizes, hw), hw

    if "seg" in tasks:
        fields["part_patch"] = tuple(read("seg/part_patch", "seg")[0])
        fields["fg_patch"] = tuple(read("seg/fg_patch", "seg")[0])
    if "depth" in tasks:
        scale = _gather(arrays["depth/scale"], rows)
        fields["depth_patch"] = decode_scaled(read("depth/patch", "depth")[0], scale, divide=False)
    if "normal" in tasks:
        fields["normal_patch"] = tuple(map(decode_normal, read("normal/patch", "normal")[0]))
    if "pointmap" in tasks:
        scale = _gather(arrays["pointmap/scale"], rows).astype(np.float32)
        raw = read("pointmap/patch", "pointmap")[0]
        fields["pointmap_patch"] = decode_scaled(raw, scale, divide=True)
        fields["pointmap_scale"] = scale
    return PersonPatches(**fields)


def select(patches: PersonPatches, idx: slice) -> PersonPatches:
    """The persons ``idx`` of ``patches``."""

    def cut(v: tuple[Array, ...] | None) -> tuple[Array, ...] | None:
        return None if v is None else v[idx]

    return PersonPatches(
        patch_box=patches.patch_box[idx],
        part_patch=cut(patches.part_patch),
        fg_patch=cut(patches.fg_patch),
        depth_patch=cut(patches.depth_patch),
        normal_patch=cut(patches.normal_patch),
        pointmap_patch=cut(patches.pointmap_patch),
        pointmap_scale=None if patches.pointmap_scale is None else patches.pointmap_scale[idx],
    )


def compose_fields(
    spec: StoreSpec,
    patches: PersonPatches,
    box_xyxy: Array,
    score: Array,
    size: tuple[int, int],
    tasks: Sequence[Task],
) -> dict[str, Array]:
    """One frame's composed maps as :class:`storage.results.FrameData` fields of ``tasks``."""
    maps = compose_frame_maps(
        patches,
        box_xyxy=box_xyxy,
        score=score,
        source_size=(spec.source_height, spec.source_width),
        out_size=size,
    )
    values = {
        "part": maps.part,
        "person_map": maps.person,
        "depth": maps.depth,
        "normal": maps.normal,
        "pointmap": maps.pointmap,
    }
    out: dict[str, Array] = {}
    for task in tasks:
        for name in _MAP_FIELDS.get(task, ()):
            value = values[name]
            assert value is not None, f"{name} of task {task} was not composed"
            out[name] = value
    return out


def composed_range(
    spec: StoreSpec,
    table: FrameTable,
    patches: PersonPatches,
    box_xyxy: Array,
    score: Array,
    size: tuple[int, int],
    tasks: Sequence[Task],
) -> dict[str, Array]:
    """Composed maps of every frame of ``table`` stacked on a first axis (n, H', W'[, 3]),
    from the patches of all their persons (in frame order, ``table.csr_offsets()``)."""
    offsets = table.csr_offsets()
    frames = []
    for j in range(len(table)):
        idx = slice(int(offsets[j]), int(offsets[j + 1]))
        frames.append(
            compose_fields(spec, select(patches, idx), box_xyxy[idx], score[idx], size, tasks)
        )
    names = [n for t in tasks for n in _MAP_FIELDS.get(t, ())]
    if not frames:
        empty = _empty_maps(size)
        return {n: empty[n] for n in names}
    return {n: np.stack([f[n] for f in frames]) for n in names}


def _empty_maps(size: tuple[int, int]) -> dict[str, Array]:
    h, w = size
    return {
        "part": np.zeros((0, h, w), np.uint8),
        "person_map": np.zeros((0, h, w), np.uint16),
        "depth": np.zeros((0, h, w), np.float32),
        "normal": np.zeros((0, h, w, 3), np.float32),
        "pointmap": np.zeros((0, h, w, 3), np.float32),
    }
