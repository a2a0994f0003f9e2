"""The per-person arrays of a store whose spec has a ``patch_size`` (schema v2, crop mode).

Each dense task's patches are packed into one pixel array per value (axis ``pixel``): every
block owns a segment of ``StoreSpec.pixels_per_block`` pixels, one shard, and its persons'
patches are packed at the segment's start, row-major, in person-row order; each person's (h, w)
is in its task's ``<task>/patch_hw`` row (how they are written: :mod:`storage._pixels`). The
per-row arrays (``patch_hw``, ``scale``, ``persons/patch_box``) are rows of the persons table.
"""

from __future__ import annotations

from typing import Any

from storage._layout import ArrayLayout
from storage._spec import NORMAL_SCALE, PIXEL_CHUNK, StoreSpec, Task

_VECTOR: dict[str, Any] = {"dims": ("pixel", "component"), "row_shape": (3,), "transpose": (1, 0)}
"""A pixel array of 3-vectors: stored planar (x, y, z) per chunk, like the normal maps."""


def _packed(
    spec: StoreSpec, path: str, task: Task, dtype: str, fill: float | int, **kw: Any
) -> ArrayLayout:
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


def _row(
    spec: StoreSpec,
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
        chunk_rows=spec.person_rows_per_block,
        shard_rows=None,
        codec="zstd" if dtype.startswith("int") else "blosc",
        attributes=attrs,
    )


def _patch_hw(spec: StoreSpec, task: Task) -> ArrayLayout:
    attrs = {"description": "(h, w) of the person's packed patch; 0 = none"}
    return _row(spec, f"{task}/patch_hw", task, (2,), "int32", 0, ("person", "hw"), attrs)


def _scale(spec: StoreSpec, task: Task, description: str) -> ArrayLayout:
    attrs = {"description": description}
    return _row(spec, f"{task}/scale", task, (), "float32", float("nan"), ("person",), attrs)


def patch_arrays(spec: StoreSpec) -> list[ArrayLayout]:
    """Per-person dense arrays of ``spec`` (which must have a ``patch_size``), in creation
    order: ``persons/patch_box``, then each enabled dense task's pixel and row arrays."""
    assert spec.patch_size is not None
    nan = float("nan")
    box = {"description": "x0, y0, x1, y1 of the patch in source pixels (x1, y1 excl.)"}
    out = [_row(spec, "persons/patch_box", None, (4,), "int32", -1, ("person", "xyxy"), box)]
    if spec.has("seg"):
        classes = {"classes": spec.num_classes}
        out.append(_packed(spec, "seg/part_patch", "seg", "uint8", 0, attributes=classes))
        fg = {"description": "foreground probability p of the pixel, as round(p * 255)"}
        out.append(_packed(spec, "seg/fg_patch", "seg", "uint8", 0, attributes=fg))
        out.append(_patch_hw(spec, "seg"))
    if spec.has("depth"):
        depth = {"description": "relative depth / depth/scale of the person"}
        fast = {"codec": "blosc-fast", "attributes": depth}
        out.append(_packed(spec, "depth/patch", "depth", "float16", nan, **fast))
        out.append(_scale(spec, "depth", "multiply depth/patch by it for relative depth"))
        out.append(_patch_hw(spec, "depth"))
    if spec.has("normal"):
        unit = {"scale_factor": 1.0 / NORMAL_SCALE}
        out.append(_packed(spec, "normal/patch", "normal", "int8", 0, attributes=unit, **_VECTOR))
        out.append(_patch_hw(spec, "normal"))
    if spec.has("pointmap"):
        raw = {"description": "camera-space x, y, z as the model gives them: metric * scale"}
        out.append(
            _packed(
                spec,
                "pointmap/patch",
                "pointmap",
                "float16",
                nan,
                codec="blosc-fast",
                attributes=raw,
                **_VECTOR,
            )
        )
        s = "the model's scale s of the person's crop: divide pointmap/patch by it for metric xyz"
        out.append(_scale(spec, "pointmap", s))
        out.append(_patch_hw(spec, "pointmap"))
    return out
