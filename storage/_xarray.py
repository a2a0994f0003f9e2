"""The xarray view of a result store (optional dependency: xarray)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import xarray

    from storage.reader import ResultReader

# (group, array) -> variable name in the Dataset; names must not clash with dimension names.
_RENAMES = {
    "frames": {"status": "frame_status"},
    "persons": {"frame": "person_frame"},
    "seg": {"person": "person_map"},
    "depth": {"relative": "depth"},
    "normal": {"xyz": "normal"},
}


def build_dataset(reader: ResultReader) -> xarray.Dataset:
    """Return the committed frames of ``reader`` as one lazily loaded Dataset.

    Dimensions: ``frame`` (committed frames), ``person`` (persons of those frames, compacted,
    in frame order; ``person_frame`` says which frame), ``keypoint``, ``xy``, ``xyxy``, ``y``,
    ``x``, ``component``. Normals are decoded with their ``scale_factor`` (raw int8 / 127, not
    renormalised); everything else keeps its stored dtype.

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
    groups = ["frames", "persons", *reader.spec.tasks]
    parts = []
    for group in groups:
        ds = xr.open_zarr(
            reader._store, group=group, consolidated=False, zarr_format=3, chunks=None
        )
        ds = ds.rename_vars({k: v for k, v in _RENAMES.get(group, {}).items() if k in ds})
        if "frame" in ds.dims:
            ds = ds.isel(frame=slice(0, n))
        if "person" in ds.dims:
            ds = ds.isel(person=rows)
        parts.append(ds)
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
    return out
