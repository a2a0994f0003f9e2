"""`ArrayLayout` and the arrays of every store: frames, blocks, persons, pose, frame maps.

The per-person arrays of a store with a ``patch_size`` are in :mod:`storage._patch_layout`;
:class:`storage.schema.ZarrLayout` puts them together. Public names are re-exported by
:mod:`storage.schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from storage._spec import FRAME_STATUS, NORMAL_SCALE, PERSON_CHUNK_ROWS, StoreSpec, Task


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


def frame_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """Per-frame scalars and the per-block commit markers (every store)."""
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

    status = {
        "description": "what became of the frame; absent in older stores (all ok)",
        "codes": {"0": "never written", **{str(v): k for k, v in FRAME_STATUS.items()}},
    }
    return [
        scalar("frames/source_index", "int64", -1, {"description": "index in the source video"}),
        scalar("frames/pts", "int64", -(2**63), {"description": "pts; int64 min = unknown"}),
        scalar("frames/time_s", "float64", float("nan"), {"units": "s"}),
        scalar("frames/person_offset", "int64", -1, {"description": "first physical person row"}),
        scalar("frames/person_count", "int32", 0, {"description": "persons in the frame"}),
        scalar("frames/status", "uint8", 0, status, optional=True),
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


def person_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """The persons table (every store)."""
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


def pose_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """Keypoints and their scores, per person row."""
    rows, k = spec.person_rows_per_block, spec.num_keypoints
    chunk = min(PERSON_CHUNK_ROWS, rows)

    def per_person(
        path: str, dims: tuple[str, ...], row_shape: tuple[int, ...], **kw: Any
    ) -> ArrayLayout:
        return ArrayLayout(
            path=path,
            task="pose",
            axis="person",
            dims=dims,
            row_shape=row_shape,
            fill_value=float("nan"),
            chunk_rows=chunk,
            shard_rows=rows,
            codec="blosc",
            **kw,
        )

    return [
        per_person(
            "pose/keypoints_xy",
            ("person", "keypoint", "xy"),
            (k, 2),
            dtype="float32",
            attributes={"units": "source pixels (1/64 px grid)"},
        ),
        per_person("pose/keypoint_score", ("person", "keypoint"), (k,), dtype="float16"),
    ]


def map_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """Frame maps of the dense tasks (a store without ``patch_size``): one chunk per frame,
    one shard per block."""
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

    vectors: dict[str, Any] = {
        "dims": (*dims, "component"),
        "row_shape": (*hw, 3),
        "transpose": (0, 3, 1, 2),
    }
    nan = float("nan")
    out: list[ArrayLayout] = []
    if spec.has("seg"):
        classes = {"classes": spec.num_classes}
        out.append(frame_map("seg/part", "seg", "uint8", 0, attributes=classes))
        slot = {"description": "slot+1"}
        out.append(frame_map("seg/person", "seg", "uint16", 0, attributes=slot))
    if spec.has("depth"):
        out.append(frame_map("depth/relative", "depth", "float16", nan, codec="blosc"))
    if spec.has("normal"):
        scale = {"scale_factor": 1.0 / NORMAL_SCALE}
        out.append(frame_map("normal/xyz", "normal", "int8", 0, attributes=scale, **vectors))
    if spec.has("pointmap"):
        xyz = {"description": "metric camera-space x, y, z; NaN off-person"}
        out.append(
            frame_map(
                "pointmap/xyz", "pointmap", "float16", nan, codec="blosc", attributes=xyz, **vectors
            )
        )
    return out
