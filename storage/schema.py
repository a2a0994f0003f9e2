"""Result-store schema v1: the store spec a job chooses and the physical Zarr layout it implies.

:class:`StoreSpec` is what a job decides (tasks, keypoint count, output size, block size).
:class:`ZarrLayout` is derived from it and names every array with its dtype, fill value, chunking,
sharding and codecs. The reasons for each choice are in ``docs/schema.md``.

Example:
    >>> spec = StoreSpec.for_source(720, 1280, tasks=("pose", "depth"), downscale=2)
    >>> (spec.height, spec.width, spec.tasks)
    (360, 640, ('pose', 'depth'))
    >>> [a.path for a in ZarrLayout.from_spec(spec).arrays if a.task == "depth"]
    ['depth/relative']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, cast

from storage.errors import SchemaMismatchError

__all__ = [
    "DEFAULT_MAX_PERSONS",
    "FRAME_STATUS",
    "KEYPOINT_COUNTS",
    "NORMAL_SCALE",
    "NUM_PART_CLASSES",
    "SCHEMA_VERSION",
    "TASKS",
    "ArrayLayout",
    "FrameStatus",
    "StoreSpec",
    "Task",
    "ZarrLayout",
    "output_size",
]

SCHEMA_VERSION: Final = 1
Task = Literal["pose", "seg", "depth", "normal"]
TASKS: Final[tuple[Task, ...]] = ("pose", "seg", "depth", "normal")
KEYPOINT_COUNTS: Final = (17, 133, 308)
NUM_PART_CLASSES: Final = 28
NORMAL_SCALE: Final = 127
"""Normals are stored as ``round(n * 127)`` in int8; readers divide by 127."""
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
    """

    tasks: tuple[Task, ...] = TASKS
    num_keypoints: int = 308
    height: int
    width: int
    source_height: int
    source_width: int
    frames_per_shard: int = 8
    max_persons_per_frame: int = DEFAULT_MAX_PERSONS

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
        )

    @property
    def person_rows_per_block(self) -> int:
        """Rows of the person axis owned by one block of frames."""
        return self.frames_per_shard * self.max_persons_per_frame

    def has(self, task: Task) -> bool:
        """Return whether ``task`` is enabled."""
        return task in self.tasks

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_dict` turns back into an equal spec."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tasks"] = list(self.tasks)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ArrayLayout:
    """Physical layout of one Zarr array of the store.

    Attributes:
        path: Array path inside the store, e.g. ``"seg/part"``.
        task: The task it belongs to, or None for always-present arrays.
        axis: What axis 0 counts: ``"frame"``, ``"person"`` (physical rows) or ``"block"``.
        dims: Dimension names, axis 0 first.
        row_shape: Shape of one row (the trailing dimensions).
        dtype: On-disk dtype.
        fill_value: Value of never-written elements.
        chunk_rows: Rows per chunk (the inner chunk when sharded).
        shard_rows: Rows per shard, or None when chunks are stored unsharded.
        codec: ``"zstd"`` (zstd level 3) or ``"blosc"`` (blosc zstd level 5, byte shuffle).
        transpose: Chunk axis order applied before compression, or None.
        attributes: Array attributes (units, scale factors, meaning of fill values).
        optional: absent from stores written before it existed; readers and writers of such
            a store do without it (see each array's meaning for what its absence says).
    """

    path: str
    task: Task | None
    axis: Literal["frame", "person", "block"]
    dims: tuple[str, ...]
    row_shape: tuple[int, ...]
    dtype: str
    fill_value: float | int
    chunk_rows: int
    shard_rows: int | None
    codec: Literal["zstd", "blosc"]
    transpose: tuple[int, ...] | None = None
    attributes: Mapping[str, Any] | None = None
    optional: bool = False

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
        arrays += _map_arrays(spec)
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
