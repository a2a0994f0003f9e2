"""Result-store schema v2: the store spec a job chooses and the physical Zarr layout it implies.

:class:`StoreSpec` is what a job decides (tasks, keypoint count, output size, block size, and
whether dense results are stored as frame maps or per person). :class:`ZarrLayout` is derived
from it and names every array with its dtype, fill value, chunking, sharding and codecs. The
reasons for each choice are in ``docs/schema.md``. Stores of schema v1 (no ``patch_size``) are
frame-map stores and read as before.

Example:
    >>> spec = StoreSpec.for_source(720, 1280, tasks=("pose", "depth"), downscale=2)
    >>> (spec.height, spec.width, spec.tasks)
    (360, 640, ('pose', 'depth'))
    >>> [a.path for a in ZarrLayout.from_spec(spec).arrays if a.task == "depth"]
    ['depth/relative']
    >>> per_person = StoreSpec.for_source(720, 1280, tasks=("depth",), patch_size=(1024, 768))
    >>> [a.path for a in ZarrLayout.from_spec(per_person).arrays if a.task == "depth"]
    ['depth/patch', 'depth/scale', 'depth/patch_hw']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, cast

import numpy as np

from storage.errors import SchemaMismatchError

__all__ = [
    "DEFAULT_MAX_PERSONS",
    "DENSE_TASKS",
    "FRAME_STATUS",
    "KEYPOINT_COUNTS",
    "NORMAL_SCALE",
    "NUM_PART_CLASSES",
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

SCHEMA_VERSION: Final = 2
SUPPORTED_SCHEMA_VERSIONS: Final = (1, 2)
"""Versions this code reads: v1 stores are frame-map stores whose spec has no ``patch_size``."""
Task = Literal["pose", "seg", "depth", "normal"]
TASKS: Final[tuple[Task, ...]] = ("pose", "seg", "depth", "normal")
DENSE_TASKS: Final[tuple[Task, ...]] = ("seg", "depth", "normal")
KEYPOINT_COUNTS: Final = (17, 133, 308)
NUM_PART_CLASSES: Final = 28
NORMAL_SCALE: Final = 127
"""Normals are stored as ``round(n * 127)`` in int8; readers divide by 127."""
PIXEL_CHUNK: Final = 2**18
"""Pixels per chunk of the per-person pixel arrays (512 KiB of float16 depth)."""
PERSON_CHUNK_ROWS: Final = 64
"""Inner chunk length along the person axis of the pose arrays."""
MAX_PERSON_SLOTS: Final = 65535
DEFAULT_MAX_PERSONS: Final = 128
"""Person rows a store reserves per frame unless its spec says otherwise."""

FrameStatus = Literal["ok", "corrupt", "skipped"]
"""What became of a frame the job selected: ``ok`` (analysed), ``corrupt`` (its packet failed
to decode or the decoder flagged it: no pixels, no persons, empty maps) or ``skipped`` (decoded
but left out: more detections than the store holds per frame)."""
FRAME_STATUS: Final[dict[FrameStatus, int]] = {"ok": 1, "corrupt": 2, "skipped": 3}
"""On-disk code of each status in ``frames/status``; 0 (the fill) is a frame never written."""


def output_size(source_height: int, source_width: int, downscale: float = 1.0) -> tuple[int, int]:
    """Return the output map size (H, W) for a source size and a downscale factor.

    Args:
        source_height: Source video height in pixels.
        source_width: Source video width in pixels.
        downscale: Factor >= 1; output = round(source / downscale), at least 1 pixel.

    Returns:
        The output (height, width).

    Raises:
        SchemaMismatchError: If a size is not positive or ``downscale`` < 1.

    Example:
        >>> output_size(720, 1280, 2.5)
        (288, 512)
    """
    if source_height < 1 or source_width < 1:
        msg = f"source size must be positive, got {source_height}x{source_width}"
        raise SchemaMismatchError(msg)
    if not downscale >= 1.0:
        msg = f"downscale must be >= 1 (1 = source resolution), got {downscale}"
        raise SchemaMismatchError(msg)
    return max(1, round(source_height / downscale)), max(1, round(source_width / downscale))


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    """What one job's result store holds; fixed when the store is created.

    Attributes:
        tasks: Enabled tasks, a non-empty subset of ``TASKS`` kept in canonical order.
        num_keypoints: Keypoints per person K (308 Sapiens whole body, 133 COCO-WholeBody, 17).
        height: Output map height H (source height unless downscaled).
        width: Output map width W.
        source_height: Source video height; keypoints and boxes stay in source pixels.
        source_width: Source video width.
        frames_per_shard: Frames per block B: the unit of commit, shard and writer ownership.
        max_persons_per_frame: Person rows reserved per frame; a block owns B times this many.
        patch_size: (Hs, Ws) largest per-person patch of the dense results (seg, depth,
            normal), which are then stored per person (the producer sets it to the model's
            crop size, e.g. (1024, 768)); None (default): dense results are stored as frame
            maps of the output size.
    """

    tasks: tuple[Task, ...] = TASKS
    num_keypoints: int = 308
    height: int
    width: int
    source_height: int
    source_width: int
    frames_per_shard: int = 8
    max_persons_per_frame: int = DEFAULT_MAX_PERSONS
    patch_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            msg = f"tasks: expected a non-empty, duplicate-free subset of {TASKS}, got {self.tasks}"
            raise SchemaMismatchError(msg)
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in self.tasks))
        if self.num_keypoints not in KEYPOINT_COUNTS:
            msg = f"num_keypoints: expected one of {KEYPOINT_COUNTS}, got {self.num_keypoints}"
            raise SchemaMismatchError(msg)
        for name in ("height", "width", "source_height", "source_width"):
            if int(getattr(self, name)) < 1:
                msg = f"{name}: expected a positive pixel count, got {getattr(self, name)}"
                raise SchemaMismatchError(msg)
        if self.height > self.source_height or self.width > self.source_width:
            msg = (
                f"output size {self.height}x{self.width} is larger than the source "
                f"{self.source_height}x{self.source_width}; only downscaling is supported"
            )
            raise SchemaMismatchError(msg)
        if not 1 <= self.frames_per_shard <= 256:
            msg = f"frames_per_shard: expected 1..256, got {self.frames_per_shard}"
            raise SchemaMismatchError(msg)
        if not 1 <= self.max_persons_per_frame <= MAX_PERSON_SLOTS:
            msg = (
                f"max_persons_per_frame: expected 1..{MAX_PERSON_SLOTS}, "
                f"got {self.max_persons_per_frame}"
            )
            raise SchemaMismatchError(msg)
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", _check_patch_size(self.patch_size))

    @classmethod
    def for_source(
        cls,
        source_height: int,
        source_width: int,
        *,
        tasks: tuple[Task, ...] = TASKS,
        downscale: float = 1.0,
        num_keypoints: int = 308,
        frames_per_shard: int = 8,
        max_persons_per_frame: int = DEFAULT_MAX_PERSONS,
        patch_size: tuple[int, int] | None = None,
    ) -> StoreSpec:
        """Build a spec whose output size is the source size divided by ``downscale``."""
        height, width = output_size(source_height, source_width, downscale)
        return cls(
            tasks=tasks,
            num_keypoints=num_keypoints,
            height=height,
            width=width,
            source_height=source_height,
            source_width=source_width,
            frames_per_shard=frames_per_shard,
            max_persons_per_frame=max_persons_per_frame,
            patch_size=patch_size,
        )

    @property
    def per_person(self) -> bool:
        """Whether dense results are stored per person (``patch_size`` set, a dense task on)."""
        return self.patch_size is not None and any(t in DENSE_TASKS for t in self.tasks)

    @property
    def person_rows_per_block(self) -> int:
        """Rows of the person axis owned by one block of frames."""
        return self.frames_per_shard * self.max_persons_per_frame

    @property
    def pixels_per_block(self) -> int:
        """Pixels of each per-person pixel array owned by one block: room for every person
        row of the block at the full ``patch_size``, in whole chunks (0 without one)."""
        if self.patch_size is None:
            return 0
        need = self.person_rows_per_block * self.patch_size[0] * self.patch_size[1]
        return -(-need // PIXEL_CHUNK) * PIXEL_CHUNK

    def has(self, task: Task) -> bool:
        """Return whether ``task`` is enabled."""
        return task in self.tasks

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_dict` turns back into an equal spec."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tasks"] = list(self.tasks)
        out["patch_size"] = None if self.patch_size is None else list(self.patch_size)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StoreSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are rejected.

        Raises:
            SchemaMismatchError: On unknown keys or invalid values.
        """
        valid = {f.name for f in fields(cls)}
        if unknown := set(raw) - valid:
            msg = f"unknown StoreSpec key(s) {sorted(unknown)}; valid keys: {sorted(valid)}"
            raise SchemaMismatchError(msg)
        values = dict(raw)
        if "tasks" in values:
            values["tasks"] = tuple(cast("list[Task]", values["tasks"]))
        try:
            return cls(**values)
        except TypeError as e:
            msg = f"invalid StoreSpec {dict(raw)!r}: {e}"
            raise SchemaMismatchError(msg) from e


def _check_patch_size(value: Any) -> tuple[int, int]:
    """Return ``value`` as an (Hs, Ws) tuple of positive ints, or raise."""
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value
        )
    )
    if not ok:
        msg = f"patch_size: expected None or (height, width), two ints >= 1, got {value!r}"
        raise SchemaMismatchError(msg)
    return int(value[0]), int(value[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrayLayout:
    """Physical layout of one Zarr array of the store.

    Attributes:
        path: Array path inside the store, e.g. ``"seg/part"``.
        task: The task it belongs to, or None for always-present arrays.
        axis: What axis 0 counts: ``"frame"``, ``"person"`` (physical rows), ``"block"`` or
            ``"pixel"`` (per-person patch pixels, packed).
        dims: Dimension names, axis 0 first.
        row_shape: Shape of one row (the trailing dimensions).
        dtype: On-disk dtype.
        fill_value: Value of never-written elements.
        chunk_rows: Rows per chunk (the inner chunk when sharded).
        shard_rows: Rows per shard, or None when chunks are stored unsharded.
        codec: ``"zstd"`` (zstd level 3), ``"blosc"`` (blosc zstd level 5, byte shuffle) or
            ``"blosc-fast"`` (blosc zstd level 1, bit shuffle: a seventh of the CPU time of
            ``blosc`` on float16 depth patches for 5 % more bytes).
        transpose: Chunk axis order applied before compression, or None.
        attributes: Array attributes (units, scale factors, meaning of fill values).
        optional: absent from stores written before it existed; readers and writers of such
            a store do without it (see each array's meaning for what its absence says).
        packed: a per-person pixel array (axis ``pixel``): each block owns a segment of
            ``StoreSpec.pixels_per_block`` pixels, and its persons' patches are packed at the
            segment's start, row-major, in person-row order (no padding); only that prefix is
            ever written.
    """

    path: str
    task: Task | None
    axis: Literal["frame", "person", "block", "pixel"]
    dims: tuple[str, ...]
    row_shape: tuple[int, ...]
    dtype: str
    fill_value: float | int
    chunk_rows: int
    shard_rows: int | None
    codec: Literal["zstd", "blosc", "blosc-fast"]
    transpose: tuple[int, ...] | None = None
    attributes: Mapping[str, Any] | None = None
    optional: bool = False
    packed: bool = False

    def shape(self, rows: int) -> tuple[int, ...]:
        """Return the array shape for ``rows`` rows along axis 0."""
        return (rows, *self.row_shape)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZarrLayout:
    """All arrays of a store for a given :class:`StoreSpec`, in creation order."""

    spec: StoreSpec
    arrays: tuple[ArrayLayout, ...]

    @classmethod
    def from_spec(cls, spec: StoreSpec) -> ZarrLayout:
        """Derive the physical layout of ``spec`` (see docs/schema.md for the reasons)."""
        arrays = [*_frame_arrays(spec), *_person_arrays(spec)]
        if spec.has("pose"):
            arrays += _pose_arrays(spec)
        arrays += _patch_arrays(spec) if spec.per_person else _map_arrays(spec)
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


def _frame_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    b = spec.frames_per_shard

    def scalar(
        path: str, dtype: str, fill: float | int, attrs: dict[str, Any], optional: bool = False
    ) -> ArrayLayout:
        return ArrayLayout(
            path=path,
            task=None,
            axis="frame",
            dims=("frame",),
            row_shape=(),
            dtype=dtype,
            fill_value=fill,
            chunk_rows=b,
            shard_rows=None,
            codec="zstd",
            attributes=attrs,
            optional=optional,
        )

    return [
        scalar("frames/source_index", "int64", -1, {"description": "index in the source video"}),
        scalar("frames/pts", "int64", -(2**63), {"description": "pts; int64 min = unknown"}),
        scalar("frames/time_s", "float64", float("nan"), {"units": "s"}),
        scalar("frames/person_offset", "int64", -1, {"description": "first physical person row"}),
        scalar("frames/person_count", "int32", 0, {"description": "persons in the frame"}),
        scalar(
            "frames/status",
            "uint8",
            0,
            {
                "description": "what became of the frame; absent in older stores (all ok)",
                "codes": {"0": "never written", **{str(v): k for k, v in FRAME_STATUS.items()}},
            },
            optional=True,
        ),
        ArrayLayout(
            path="blocks/frames",
            task=None,
            axis="block",
            dims=("block",),
            row_shape=(),
            dtype="int32",
            fill_value=0,
            chunk_rows=1,
            shard_rows=None,
            codec="zstd",
            attributes={"description": "frames written in the block; 0 = not committed"},
        ),
    ]


def _person_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    rows = spec.person_rows_per_block

    def flat(path: str, row_shape: tuple[int, ...], dtype: str, fill: float | int) -> ArrayLayout:
        dims = ("person", "xyxy")[: 1 + len(row_shape)]
        return ArrayLayout(
            path=path,
            task=None,
            axis="person",
            dims=dims,
            row_shape=row_shape,
            dtype=dtype,
            fill_value=fill,
            chunk_rows=rows,
            shard_rows=None,
            codec="zstd" if dtype.startswith("int") else "blosc",
        )

    return [
        flat("persons/frame", (), "int64", -1),
        flat("persons/track_id", (), "int64", -1),
        flat("persons/box_xyxy", (4,), "float32", float("nan")),
        flat("persons/score", (), "float32", float("nan")),
    ]


def _pose_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    rows, k = spec.person_rows_per_block, spec.num_keypoints
    chunk = min(PERSON_CHUNK_ROWS, rows)
    return [
        ArrayLayout(
            path="pose/keypoints_xy",
            task="pose",
            axis="person",
            dims=("person", "keypoint", "xy"),
            row_shape=(k, 2),
            dtype="float32",
            fill_value=float("nan"),
            chunk_rows=chunk,
            shard_rows=rows,
            codec="blosc",
            attributes={"units": "source pixels (1/64 px grid)"},
        ),
        ArrayLayout(
            path="pose/keypoint_score",
            task="pose",
            axis="person",
            dims=("person", "keypoint"),
            row_shape=(k,),
            dtype="float16",
            fill_value=float("nan"),
            chunk_rows=chunk,
            shard_rows=rows,
            codec="blosc",
        ),
    ]


def _map_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    hw, b = (spec.height, spec.width), spec.frames_per_shard
    dims = ("frame", "y", "x")

    def frame_map(path: str, task: Task, dtype: str, fill: float | int, **kw: Any) -> ArrayLayout:
        return ArrayLayout(
            path=path,
            task=task,
            axis="frame",
            dims=kw.pop("dims", dims),
            row_shape=kw.pop("row_shape", hw),
            dtype=dtype,
            fill_value=fill,
            chunk_rows=1,
            shard_rows=b,
            codec=kw.pop("codec", "zstd"),
            **kw,
        )

    out: list[ArrayLayout] = []
    if spec.has("seg"):
        out.append(frame_map("seg/part", "seg", "uint8", 0, attributes={"classes": 28}))
        out.append(
            frame_map("seg/person", "seg", "uint16", 0, attributes={"description": "slot+1"})
        )
    if spec.has("depth"):
        out.append(frame_map("depth/relative", "depth", "float16", float("nan"), codec="blosc"))
    if spec.has("normal"):
        out.append(
            frame_map(
                "normal/xyz",
                "normal",
                "int8",
                0,
                dims=(*dims, "component"),
                row_shape=(*hw, 3),
                transpose=(0, 3, 1, 2),
                attributes={"scale_factor": 1.0 / NORMAL_SCALE},
            )
        )
    return out


def _patch_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """Per-person dense arrays: patches packed in each block's pixel segment, one shard per
    block; each person's (h, w) in its task's ``patch_hw`` row."""
    assert spec.patch_size is not None
    rows = spec.person_rows_per_block

    def packed(path: str, task: Task, dtype: str, fill: float | int, **kw: Any) -> ArrayLayout:
        return ArrayLayout(
            path=path,
            task=task,
            axis="pixel",
            dims=kw.pop("dims", ("pixel",)),
            row_shape=kw.pop("row_shape", ()),
            dtype=dtype,
            fill_value=fill,
            chunk_rows=PIXEL_CHUNK,
            shard_rows=spec.pixels_per_block,
            codec=kw.pop("codec", "zstd"),
            packed=True,
            **kw,
        )

    def flat(
        path: str,
        task: Task | None,
        row_shape: tuple[int, ...],
        dtype: str,
        fill: float | int,
        dims: tuple[str, ...],
        attrs: dict[str, Any],
    ) -> ArrayLayout:
        return ArrayLayout(
            path=path,
            task=task,
            axis="person",
            dims=dims,
            row_shape=row_shape,
            dtype=dtype,
            fill_value=fill,
            chunk_rows=rows,
            shard_rows=None,
            codec="zstd" if dtype.startswith("int") else "blosc",
            attributes=attrs,
        )

    def hw(task: Task) -> ArrayLayout:
        attrs = {"description": "(h, w) of the person's packed patch; 0 = none"}
        return flat(f"{task}/patch_hw", task, (2,), "int32", 0, ("person", "hw"), attrs)

    box_attrs = {"description": "x0, y0, x1, y1 of the patch in source pixels (x1, y1 excl.)"}
    out = [flat("persons/patch_box", None, (4,), "int32", -1, ("person", "xyxy"), box_attrs)]
    if spec.has("seg"):
        out.append(packed("seg/part_patch", "seg", "uint8", 0, attributes={"classes": 28}))
        fg = {"description": "foreground probability p of the pixel, as round(p * 255)"}
        out.append(packed("seg/fg_patch", "seg", "uint8", 0, attributes=fg))
        out.append(hw("seg"))
    if spec.has("depth"):
        depth = {"description": "relative depth / depth/scale of the person"}
        nan = float("nan")
        out.append(
            packed("depth/patch", "depth", "float16", nan, codec="blosc-fast", attributes=depth)
        )
        scale = {"description": "multiply depth/patch by it for relative depth"}
        out.append(flat("depth/scale", "depth", (), "float32", float("nan"), ("person",), scale))
        out.append(hw("depth"))
    if spec.has("normal"):
        out.append(
            packed(
                "normal/patch",
                "normal",
                "int8",
                0,
                dims=("pixel", "component"),
                row_shape=(3,),
                transpose=(1, 0),
                attributes={"scale_factor": 1.0 / NORMAL_SCALE},
            )
        )
        out.append(hw("normal"))
    return out
