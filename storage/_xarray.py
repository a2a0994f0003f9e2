"""The xarray view of a result store (optional dependency: xarray)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from storage._pixels import pixel_spans
from storage.schema import DENSE_TASKS

if TYPE_CHECKING:
    import xarray

    from storage.reader import ResultReader

# (group, array) -> variable name in the Dataset; names must not clash with dimension names
# nor with each other (each dense task of a per-person store has a ``patch_hw``).
_RENAMES = {
    "frames": {"status": "frame_status"},
    "persons": {"frame": "person_frame"},
    "seg": {"person": "person_map", "patch_hw": "seg_patch_hw"},
    "depth": {
        "relative": "depth",
        "patch": "depth_patch",
        "scale": "depth_scale",
        "patch_hw": "depth_patch_hw",
    },
    "normal": {"xyz": "normal", "patch": "normal_patch", "patch_hw": "normal_patch_hw"},
    "pointmap": {
        "xyz": "pointmap_xyz",
        "patch": "pointmap_patch",
        "scale": "pointmap_scale",
        "patch_hw": "pointmap_patch_hw",
    },
}


def build_dataset(reader: ResultReader) -> xarray.Dataset:
    """Return the committed frames of ``reader`` as one lazily loaded Dataset.

    Dimensions: ``frame`` (committed frames), ``person`` (persons of those frames, compacted,
    in frame order; ``person_frame`` says which frame), ``keypoint``, ``xy``, ``xyxy``, ``y``,
    ``x``, ``component``. Normals are decoded with their ``scale_factor`` (raw int8 / 127, not
    renormalised); everything else keeps its stored dtype. A frame-map store's pointmap is
    ``pointmap_xyz`` (``frame, y, x, component``, float16 metric x, y, z).

    A per-person store (schema v2) has no frame maps here: it gives the packed per-person
    pixel arrays, lazily, each task's with its own dim ``<task>_pixel`` (their lengths differ
    once a finished store is trimmed) (``seg``: ``part_patch``, ``fg_patch``;
    ``depth_patch`` times ``depth_scale`` is relative depth; ``normal_patch`` with
    ``component``; ``pointmap_patch`` with ``component`` is the model's raw x, y, z:
    divided by ``pointmap_scale`` it is metric). Person k's patch of a task is the ``h * w``
    pixels from ``<task>_pixel_start[k]``, row-major, with (h, w) in ``<task>_patch_hw`` (dim
    ``hw``); ``patch_box`` (``xyxy``) is x0, y0, x1, y1 in source pixels. Frame maps come from
    :meth:`ResultReader.frame` or :func:`storage.compose_frame_maps`.

    Raises:
        ImportError: If xarray is not installed.
    """
    try:
        import xarray as xr
    except ImportError as e:
        msg = "the xarray view needs xarray; install with: pip install 'sapiens-stream[xarray]'"
        raise ImportError(msg) from e
    table = reader.read_frames()
    n, rows = len(table), table.person_rows()
    groups = ("frames", "persons", *reader.spec.tasks)
    parts = [_open_group(reader, group, n, rows) for group in groups]
    out = xr.merge(parts, combine_attrs="drop", join="exact", compat="no_conflicts")
    out = out.drop_vars("person_offset")
    out = out.set_coords(["time_s", "source_index", "pts", "person_frame"])
    out = out.assign_coords(frame=np.arange(n, dtype=np.int64))
    out.attrs = {
        "uri": reader.uri,
        "status": reader.status,
        "tasks": list(reader.spec.tasks),
        "job_id": str(reader.attrs.get("job", {}).get("job_id", "")),
    }
    _add_pixel_starts(out, reader, rows)
    return out


def _open_group(reader: ResultReader, group: str, n: int, rows: np.ndarray) -> xarray.Dataset:
    """One group of the store, lazily, its variables renamed (``_RENAMES``), cut to the
    ``n`` committed frames and the person ``rows`` of those frames (xarray is imported)."""
    import xarray as xr

    ds: xarray.Dataset = xr.open_zarr(
        reader._store, group=group, consolidated=False, zarr_format=3, chunks=None
    )
    ds = ds.rename_vars({k: v for k, v in _RENAMES.get(group, {}).items() if k in ds})
    if "pixel" in ds.dims:  # each task's pixel arrays have their own length (once trimmed)
        ds = ds.rename_dims({"pixel": f"{group}_pixel"})
    if "frame" in ds.dims:
        ds = ds.isel(frame=slice(0, n))
    if "person" in ds.dims:
        ds = ds.isel(person=rows)
    return ds


def _add_pixel_starts(out: xarray.Dataset, reader: ResultReader, rows: np.ndarray) -> None:
    """A per-person store: its ``patch_size`` attribute, and where each person's patch of
    each dense task begins in the task's pixel arrays (``<task>_pixel_start``)."""
    spec = reader.spec
    if not spec.per_person or spec.patch_size is None:
        return
    out.attrs["patch_size"] = list(spec.patch_size)
    for task in (t for t in DENSE_TASKS if spec.has(t)):
        hw = reader._arrays[f"{task}/patch_hw"]
        starts, _ = pixel_spans(hw, rows, spec.person_rows_per_block, spec.pixels_per_block)
        out[f"{task}_pixel_start"] = ("person", starts)
