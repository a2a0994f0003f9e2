"""Result-store schema v2: the store spec a job chooses and the physical Zarr layout it implies.

:class:`StoreSpec` is what a job decides (tasks, keypoint count, part classes, output size,
block size, and whether dense results are stored as frame maps or per person).
:class:`ZarrLayout` is derived from it and names every array with its dtype, fill value,
chunking, sharding and codecs. The reasons for each choice are in ``docs/schema.md``. Stores of
schema v1 (no ``patch_size``) are frame-map stores and read as before; v2 stores written before
the Sapiens2 additions (no ``pointmap`` task, no ``num_classes``: 28 classes) read unchanged.

The definitions live in private modules, by concept: the vocabulary and :class:`StoreSpec` in
``storage/_spec.py``, :class:`ArrayLayout` with the frame, person, pose and frame-map arrays in
``storage/_layout.py``, the per-person arrays in ``storage/_patch_layout.py``. Import them from
here.

Example:
    >>> spec = StoreSpec.for_source(720, 1280, tasks=("pose", "depth"), downscale=2)
    >>> (spec.height, spec.width, spec.tasks)
    (360, 640, ('pose', 'depth'))
    >>> [a.path for a in ZarrLayout.from_spec(spec).arrays if a.task == "depth"]
    ['depth/relative']
    >>> per_person = StoreSpec.for_source(720, 1280, tasks=("depth",), patch_size=(1024, 768))
    >>> [a.path for a in ZarrLayout.from_spec(per_person).arrays if a.task == "depth"]
    ['depth/patch', 'depth/scale', 'depth/patch_hw']
    >>> v2 = StoreSpec.for_source(720, 1280, tasks=("seg", "pointmap"), num_classes=29)
    >>> arrays = ZarrLayout.from_spec(v2).by_path()
    >>> arrays["seg/part"].attributes, arrays["pointmap/xyz"].row_shape
    ({'classes': 29}, (720, 1280, 3))
"""

from __future__ import annotations

from dataclasses import dataclass

from storage._layout import ArrayLayout, frame_arrays, map_arrays, person_arrays, pose_arrays
from storage._patch_layout import patch_arrays
from storage._spec import (
    DEFAULT_MAX_PERSONS,
    DENSE_TASKS,
    FRAME_STATUS,
    KEYPOINT_COUNTS,
    MAX_PART_CLASSES,
    MAX_PERSON_SLOTS,
    NORMAL_SCALE,
    NUM_PART_CLASSES,
    PART_CLASS_COUNTS,
    PERSON_CHUNK_ROWS,
    PIXEL_CHUNK,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    TASKS,
    FrameStatus,
    StoreSpec,
    Task,
    output_size,
)

__all__ = [
    "DEFAULT_MAX_PERSONS",
    "DENSE_TASKS",
    "FRAME_STATUS",
    "KEYPOINT_COUNTS",
    "MAX_PART_CLASSES",
    "MAX_PERSON_SLOTS",
    "NORMAL_SCALE",
    "NUM_PART_CLASSES",
    "PART_CLASS_COUNTS",
    "PERSON_CHUNK_ROWS",
    "PIXEL_CHUNK",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "TASKS",
    "ArrayLayout",
    "FrameStatus",
    "StoreSpec",
    "Task",
    "ZarrLayout",
    "output_size",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ZarrLayout:
    """All arrays of a store for a given :class:`StoreSpec`, in creation order."""

    spec: StoreSpec
    arrays: tuple[ArrayLayout, ...]

    @classmethod
    def from_spec(cls, spec: StoreSpec) -> ZarrLayout:
        """Derive the physical layout of ``spec`` (see docs/schema.md for the reasons)."""
        arrays = [*frame_arrays(spec), *person_arrays(spec)]
        if spec.has("pose"):
            arrays += pose_arrays(spec)
        arrays += patch_arrays(spec) if spec.per_person else map_arrays(spec)
        return cls(spec=spec, arrays=tuple(arrays))

    def by_path(self) -> dict[str, ArrayLayout]:
        """Return the arrays keyed by path."""
        return {a.path: a for a in self.arrays}

    def rows_for_blocks(self, array: ArrayLayout, n_blocks: int) -> int:
        """Return axis-0 length of ``array`` that holds ``n_blocks`` blocks."""
        if array.axis == "block":
            return n_blocks
        if array.axis == "person":
            return n_blocks * self.spec.person_rows_per_block
        if array.axis == "pixel":
            return n_blocks * self.spec.pixels_per_block
        return n_blocks * self.spec.frames_per_shard
