"""Zarr plumbing shared by the writer and the reader: stores, arrays, root attributes."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec
from zarr.errors import ZarrUserWarning
from zarr.storage import FsspecStore, LocalStore

from storage.errors import SchemaMismatchError, StoreNotFoundError
from storage.schema import SCHEMA_VERSION, ArrayLayout, StoreSpec, ZarrLayout

logger = logging.getLogger(__name__)

ATTRS_KEY = "sapiens_stream"
"""Root attribute under which all of the store's own metadata lives."""


def open_store(path_or_url: str | Path, *, read_only: bool, must_exist: bool = True) -> Store:
    """Return a Zarr store for a local path, a ``file://`` URL or any fsspec URL.

    Local paths use zarr's LocalStore (atomic writes through a temporary file and rename);
    other URLs (``memory://``, ``s3://`` with s3fs installed, ...) use FsspecStore.
    """
    text = str(path_or_url)
    if "://" not in text or text.startswith("file://"):
        local = Path(text.removeprefix("file://"))
        if must_exist and not (local / "zarr.json").exists():
            msg = f"no result store at {local}: {local / 'zarr.json'} does not exist"
            raise StoreNotFoundError(msg)
        return LocalStore(local, read_only=read_only)
    try:
        return FsspecStore.from_url(text, read_only=read_only)
    except ImportError as e:
        scheme = text.split("://", 1)[0]
        msg = (
            f"cannot open {text!r}: the fsspec backend for {scheme!r} is not installed "
            f"(for s3:// install with: pip install 'sapiens-stream[s3]')"
        )
        raise ImportError(msg) from e


def _compressor(layout: ArrayLayout) -> BytesBytesCodec:
    if layout.codec == "blosc":
        return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
    return ZstdCodec(level=3)


def create_array(root: zarr.Group, layout: ArrayLayout, rows: int) -> zarr.Array:
    """Create one array of the layout with ``rows`` rows (the caller is the store's owner)."""
    chunks = (layout.chunk_rows, *layout.row_shape)
    shards = None if layout.shard_rows is None else (layout.shard_rows, *layout.row_shape)
    filters = [] if layout.transpose is None else [TransposeCodec(order=layout.transpose)]
    return root.create_array(
        layout.path,
        shape=layout.shape(rows),
        dtype=layout.dtype,
        chunks=chunks,
        shards=shards,
        filters=filters,
        compressors=[_compressor(layout)],
        fill_value=layout.fill_value,
        dimension_names=layout.dims,
        attributes=dict(layout.attributes or {}),
        config={"write_empty_chunks": False},
    )


def open_root(store: Store, *, mode: str, consolidated: bool = False) -> zarr.Group:
    """Open the root group; raise StoreNotFoundError when there is none.

    ``consolidated=True`` uses consolidated metadata when present (a finalized store; it is
    written just after the status turns complete), else reads each array's metadata.
    """
    try:
        return zarr.open_group(store, mode=mode, use_consolidated=None if consolidated else False)  # type: ignore[arg-type]
    except FileNotFoundError as e:
        msg = f"no result store at {store}: {e}"
        raise StoreNotFoundError(msg) from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # zarr.json is not JSON text
        msg = f"{store}: unreadable store metadata, not a sapiens-stream store ({e})"
        raise SchemaMismatchError(msg) from e


def read_meta(root: zarr.Group) -> dict[str, Any]:
    """Return the store's own root attributes, checking the schema version."""
    attrs = root.attrs.asdict()
    meta = attrs.get(ATTRS_KEY)
    if not isinstance(meta, Mapping):
        msg = f"{root.store}: root attribute {ATTRS_KEY!r} is missing; not a sapiens-stream store"
        raise SchemaMismatchError(msg)
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        msg = (
            f"{root.store}: schema_version {version!r} is not supported; this code reads "
            f"version {SCHEMA_VERSION}"
        )
        raise SchemaMismatchError(msg)
    return dict(meta)


def write_meta(root: zarr.Group, meta: Mapping[str, Any]) -> None:
    """Replace the store's own root attributes (the owning writer only)."""
    root.attrs.update({ATTRS_KEY: dict(meta)})


def spec_of(meta: Mapping[str, Any]) -> StoreSpec:
    """Return the StoreSpec recorded in the root attributes."""
    return StoreSpec.from_dict(meta["layout"])


def open_arrays(root: zarr.Group, layout: ZarrLayout) -> dict[str, zarr.Array]:
    """Open every array of the layout; raise SchemaMismatchError if one is missing or differs."""
    out: dict[str, zarr.Array] = {}
    for a in layout.arrays:
        try:
            arr = root[a.path]
        except KeyError as e:
            msg = f"{root.store}: array {a.path!r} of the layout is missing"
            raise SchemaMismatchError(msg) from e
        if not isinstance(arr, zarr.Array) or arr.shape[1:] != a.row_shape:
            msg = f"{root.store}: {a.path!r} expected row shape {a.row_shape}, got {arr.shape[1:]}"
            raise SchemaMismatchError(msg)
        out[a.path] = arr
    return out


def remove_partial_files(store: Store) -> int:
    """Delete temporary files a killed writer left in a local store; return how many.

    LocalStore writes ``<key>.<uuid>.partial`` and renames it into place, so a writer killed
    mid-write leaves one behind. They are never read, but a resumed store should equal a clean
    one. Call only while no other writer is active.
    """
    if not isinstance(store, LocalStore):
        return 0
    removed = 0
    for path in Path(store.root).rglob("*.partial"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def consolidate(store: Store) -> None:
    """Consolidate metadata; zarr warns that this is outside the v3 spec, which we accept."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=ZarrUserWarning)
        zarr.consolidate_metadata(store)
