"""Writing and reading the per-person pixel arrays of a schema-v2 store.

A pixel array (``seg/part_patch``, ``seg/fg_patch``, ``depth/patch``, ``normal/patch``,
``pointmap/patch``) gives each block a segment of ``StoreSpec.pixels_per_block`` pixels (one
shard). The block's persons' patches are packed at the segment's start, row-major, in
person-row order, each of ``h * w`` pixels with (h, w) in the task's ``patch_hw`` row; nothing
is padded, so writing a block is one copy of its patches and reading a person is one
contiguous range.

Rewrites are byte-identical. A block is written from its segment's start, so pixels past the
new total can only remain from an earlier, longer write of the block (a write killed
mid-block, retried with other results); the stored ``patch_hw`` of the block says how long
that was. So before a block is written, ``[new total, old total)`` is reset to the fill value
(zarr then drops the chunks it empties), then ``patch_hw`` is written, then the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from storage.schema import ArrayLayout, ZarrLayout

Array = npt.NDArray[Any]


def packed_layouts(layout: ZarrLayout, arrays: Mapping[str, zarr.Array[Any]]) -> list[ArrayLayout]:
    """The store's pixel arrays (none in a frame-map store)."""
    return [a for a in layout.arrays if a.packed and a.path in arrays]


def hw_path(a: ArrayLayout) -> str:
    """The ``patch_hw`` array of the persons whose pixels ``a`` holds."""
    return f"{a.task}/patch_hw"


def _pixels(hw: Array) -> int:
    return int((hw[:, 0].astype(np.int64) * hw[:, 1]).sum())


def clear_stale(
    arrays: Mapping[str, zarr.Array[Any]],
    layout: ZarrLayout,
    block: int,
    new_hw: Mapping[str, Array],
) -> int:
    """Reset the pixels an earlier write of ``block`` left past the new patches' total.

    ``new_hw`` maps each ``patch_hw`` path to the block's new (n, 2) sizes. Must run before
    they are written. Returns the pixels reset.
    """
    rows, seg = layout.spec.person_rows_per_block, layout.spec.pixels_per_block
    reset = 0
    for a in packed_layouts(layout, arrays):
        path = hw_path(a)
        old = _pixels(np.asarray(arrays[path][block * rows : (block + 1) * rows]))
        new = _pixels(new_hw[path])
        if old > new:
            arrays[a.path][block * seg + new : block * seg + old] = a.fill_value
            reset += old - new
    return reset


def write_packed(
    array: zarr.Array[Any], a: ArrayLayout, block: int, seg: int, patches: Sequence[Array]
) -> None:
    """Write ``patches`` (in person-row order) packed at the start of ``block``'s segment."""
    if not patches:
        return
    values = np.concatenate([p.reshape(-1, *a.row_shape) for p in patches])
    start = block * seg
    array[start : start + len(values)] = values


def pixel_spans(
    hw_array: zarr.Array[Any], rows: Array, rows_per_block: int, seg: int
) -> tuple[Array, Array]:
    """(start, size) in the pixel array of each person row of ``rows`` (ascending): its block's
    segment start plus the pixels of the block's rows before it."""
    starts = np.zeros(rows.size, np.int64)
    sizes = np.zeros(rows.size, np.int64)
    blocks = rows // rows_per_block
    for b in np.unique(blocks):
        picked = np.flatnonzero(blocks == b)
        last = int(rows[picked[-1]])
        hw = np.asarray(hw_array[b * rows_per_block : last + 1]).astype(np.int64)
        px = hw[:, 0] * hw[:, 1]
        before = np.concatenate(([0], np.cumsum(px)[:-1]))
        local = rows[picked] - b * rows_per_block
        starts[picked] = b * seg + before[local]
        sizes[picked] = px[local]
    return starts, sizes


def read_packed(array: zarr.Array[Any], starts: Array, sizes: Array, hw: Array) -> list[Array]:
    """Each person's patch (h, w[, 3]) from its span; persons of one block are read in one
    request (their spans are adjacent when consecutive rows are asked for)."""
    if starts.size == 0:
        return []
    lo, hi = int(starts.min()), int((starts + sizes).max())
    # one contiguous read when the spans are dense; else one read per person
    if hi - lo <= 2 * int(sizes.sum()) + 1:
        span = np.asarray(array[lo:hi])
        return [
            span[int(s) - lo : int(s) - lo + int(n)].reshape(int(h), int(w), *array.shape[1:])
            for s, n, (h, w) in zip(starts, sizes, hw, strict=True)
        ]
    return [
        np.asarray(array[int(s) : int(s) + int(n)]).reshape(int(h), int(w), *array.shape[1:])
        for s, n, (h, w) in zip(starts, sizes, hw, strict=True)
    ]
