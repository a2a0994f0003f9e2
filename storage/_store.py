"""Zarr plumbing shared by the writer and the reader: stores, arrays, root attributes.

Local stores are :class:`DurableLocalStore`: every write is fsynced (file, then directory)
before it returns, except inside :func:`synced_at_exit` (the arrays of a store being
created), where the writes are fsynced together when the block ends. The owning writer
serialises its mutations of a local store with :class:`StoreLock`, an OS file lock on
``<store>.lock`` beside the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import Buffer
from zarr.errors import ContainsGroupError, ZarrUserWarning
from zarr.storage import FsspecStore, LocalStore

from storage.errors import (
    InvalidValueError,
    SchemaMismatchError,
    StaleOwnerError,
    StorageError,
    StoreNotFoundError,
)
from storage.schema import SUPPORTED_SCHEMA_VERSIONS, ArrayLayout, StoreSpec, ZarrLayout

logger = logging.getLogger(__name__)

ATTRS_KEY = "sapiens_stream"
"""Root attribute under which all of the store's own metadata lives."""

CREATING = "creating"
"""Status of a store whose creation has not finished: it counts as absent."""

LOCK_TIMEOUT_S = 300.0
"""How long a writer waits for another writer's commit on the same local store."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_put(
    path: Path, data: Any, *, exclusive: bool, defer: list[Path] | None = None
) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file, then fsync the directories
    whose entries changed (the file's, and the parent of each directory this call created).
    With ``defer``, nothing is fsynced here: the file and those directories are appended to
    ``defer`` for :func:`_fsync_all`."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if defer is None:
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # FileExistsError if the key exists
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if defer is not None:
        defer += [path, path.parent, *(d.parent for d in created)]
        return
    _fsync_dir(path.parent)
    for d in created:
        _fsync_dir(d.parent)


def _durable_unlink(path: Path, defer: list[Path] | None) -> None:
    """Remove ``path`` if it exists and fsync its directory (or defer that, see _durable_put)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    if defer is not None:
        defer.append(path.parent)
    else:
        _fsync_dir(path.parent)


def _make_dir_durably(path: Path) -> None:
    """``mkdir -p path``, with the entry of each directory it creates fsynced in its parent."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        _fsync_dir(d.parent)


def _fsync_all(paths: list[Path]) -> None:
    """fsync files and then directories, each once. After many writes, this costs far less than
    a fsync after each: the first one commits the file system's journal for all of them."""
    seen: set[Path] = set()
    files = [p for p in paths if not (p in seen or seen.add(p)) and not p.is_dir()]  # type: ignore[func-returns-value]
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in sorted(seen - set(files), key=lambda p: len(p.parts), reverse=True):
        _fsync_dir(path)


@contextlib.contextmanager
def synced_at_exit(store: Store) -> Iterator[None]:
    """Within the block, writes to a :class:`DurableLocalStore` are not fsynced one by one;
    all of them are when the block ends normally (not at all when it raises: for writes whose
    loss a crash makes harmless, such as a store still marked as being created)."""
    if not isinstance(store, DurableLocalStore):
        yield
        return
    store._defer = pending = []
    try:
        yield
    finally:
        store._defer = None
    _fsync_all(pending)


class DurableLocalStore(LocalStore):
    """zarr's LocalStore, but a write is on disk when it returns (survives a host crash).

    Each value goes to ``<key>.<uuid>.partial``, is fsynced, renamed into place, and the
    directory entries it changed are fsynced. Reads are LocalStore's.
    """

    async def set(self, key: str, value: Buffer) -> None:
        await self._put(key, value, exclusive=False)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # zarr asks this for every parent group of every array it creates: a key already
        # there costs a stat, not a durable write of a file that is then thrown away. (The
        # exclusive link below still decides when two writers race for a new key.)
        if await asyncio.to_thread((self.root / key).exists):
            return
        with contextlib.suppress(FileExistsError):
            await self._put(key, value, exclusive=True)

    _defer: list[Path] | None = None  # set by synced_at_exit

    async def _open(self, *, mode: Any = None) -> None:
        if not self.read_only:
            await asyncio.to_thread(_make_dir_durably, self.root)
        await super()._open(mode=mode)

    def _ensure_open_sync(self) -> None:
        if not self._is_open and not self.read_only:
            _make_dir_durably(self.root)
        super()._ensure_open_sync()

    async def clear(self) -> None:
        self._check_writable()
        await asyncio.to_thread(shutil.rmtree, self.root)
        await asyncio.to_thread(_make_dir_durably, self.root)

    async def delete(self, key: str) -> None:
        # zarr deletes a chunk or shard whose every element became the fill value: the removal
        # is made durable like a write (a stale object must not come back after a host crash).
        self._check_writable()
        path = self.root / key
        if path.is_dir():
            await super().delete(key)
            return
        await asyncio.to_thread(_durable_unlink, path, self._defer)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        self._check_writable()
        _durable_put(self.root / key, _bytes_of(value), exclusive=False, defer=self._defer)

    async def _put(self, key: str, value: Buffer, *, exclusive: bool) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        data = _bytes_of(value)
        await asyncio.to_thread(
            _durable_put, self.root / key, data, exclusive=exclusive, defer=self._defer
        )


def _bytes_of(value: Buffer) -> Any:
    if not isinstance(value, Buffer):
        msg = f"store values must be zarr Buffers, got {type(value).__name__}"
        raise TypeError(msg)
    return value.as_buffer_like()


def open_store(path_or_url: str | Path, *, read_only: bool, must_exist: bool = True) -> Store:
    """Return a Zarr store for a local path, a ``file://`` URL or any fsspec URL.

    Local paths use :class:`DurableLocalStore` (atomic, fsynced writes); other URLs
    (``memory://``, ``s3://`` with s3fs installed, ...) use FsspecStore.
    """
    text = str(path_or_url)
    if "://" not in text or text.startswith("file://"):
        local = Path(text.removeprefix("file://"))
        if must_exist and not (local / "zarr.json").exists():
            msg = f"no result store at {local}: {local / 'zarr.json'} does not exist"
            raise StoreNotFoundError(msg)
        return DurableLocalStore(local, read_only=read_only)
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
    if layout.codec == "blosc-fast":
        return BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")
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
        # Flat chunk keys (``c.0.0.0``): a new chunk is one file in its array's directory, not a
        # chain of new directories that each need a durable (fsynced) entry in their parent.
        chunk_key_encoding={"name": "default", "separator": "."},
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


def read_meta(root: zarr.Group, *, allow_incomplete: bool = False) -> dict[str, Any]:
    """Return the store's own root attributes, checking the schema version.

    Raises:
        StoreNotFoundError: If the store's creation never finished (unless allowed).
        SchemaMismatchError: If it is not a store of a supported schema version.
    """
    attrs = root.attrs.asdict()
    meta = attrs.get(ATTRS_KEY)
    if not isinstance(meta, Mapping):
        msg = f"{root.store}: root attribute {ATTRS_KEY!r} is missing; not a sapiens-stream store"
        raise SchemaMismatchError(msg)
    version = meta.get("schema_version")
    if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
        msg = (
            f"{root.store}: schema_version {version!r} is not supported; this code reads "
            f"versions {list(SUPPORTED_SCHEMA_VERSIONS)}"
        )
        raise SchemaMismatchError(msg)
    if meta.get("status") == CREATING and not allow_incomplete:
        msg = (
            f"no result store at {root.store}: its creation never finished (the writer was "
            f"stopped while creating it); Writer.create replaces it"
        )
        raise StoreNotFoundError(msg)
    return dict(meta)


def write_meta(root: zarr.Group, meta: Mapping[str, Any]) -> None:
    """Replace the store's own root attributes (the owning writer only)."""
    root.attrs.update({ATTRS_KEY: dict(meta)})


def spec_of(meta: Mapping[str, Any]) -> StoreSpec:
    """Return the StoreSpec recorded in the root attributes."""
    return StoreSpec.from_dict(meta["layout"])


def open_arrays(root: zarr.Group, layout: ZarrLayout) -> dict[str, zarr.Array]:
    """Open every array of the layout; raise SchemaMismatchError if one is missing (an optional
    one is left out) or differs."""
    out: dict[str, zarr.Array] = {}
    for a in layout.arrays:
        try:
            arr = root[a.path]
        except KeyError as e:
            if a.optional:
                continue
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


# Consolidated metadata is outside the Zarr v3 specification, and zarr warns on every use; the
# stores use it on purpose (one read opens a store). The filter is process-wide rather than a
# ``warnings.catch_warnings`` block around the call: that block swaps the global filter list and
# is not thread-safe, and a pooled writer finalizes several jobs' stores at once.
warnings.filterwarnings("ignore", message="Consolidated metadata", category=ZarrUserWarning)


def consolidate(store: Store) -> None:
    """Consolidate metadata (outside the v3 spec, which we accept: see the filter above)."""
    zarr.consolidate_metadata(store)


def check_token(fence: int | None) -> None:
    """Refuse a fencing token that is not an int >= 0 (None: unfenced)."""
    if fence is not None and (isinstance(fence, bool) or not isinstance(fence, int) or fence < 0):
        msg = f"fence: expected a fencing token (an int >= 0) or None, got {fence!r}"
        raise InvalidValueError(msg)


def may_take_over(token: int | None, recorded: int | None) -> bool:
    """Whether a writer with fencing ``token`` may own a store that records ``recorded``.

    Tokens only grow: an equal or larger token wins; an unfenced writer (None) may own only
    an unfenced store.

    Raises:
        SchemaMismatchError: If ``recorded`` is not a token.
    """
    if recorded is None:
        return True
    if isinstance(recorded, bool) or not isinstance(recorded, int):
        msg = f"the store records fencing token {recorded!r}, expected an int or null"
        raise SchemaMismatchError(msg)
    return token is not None and token >= recorded


def create_root(store: Store, meta: Mapping[str, Any]) -> zarr.Group:
    """Create the root group marked as being created (status ``creating``).

    An existing store whose creation never finished is replaced, unless it records a larger
    fencing token than ``meta["fence"]``.

    Raises:
        StorageError: If a finished store (or foreign Zarr data) exists.
        StaleOwnerError: If an unfinished store records a larger fencing token.
    """
    attrs: dict[str, Any] = {ATTRS_KEY: {**meta, "status": CREATING}}
    try:
        return zarr.open_group(store, mode="w-", attributes=attrs)
    except (FileExistsError, ContainsGroupError) as e:
        old = _unfinished_meta(store)
        if old is None:
            msg = f"a store already exists at {store}; use Writer.resume to continue it"
            raise StorageError(msg) from e
        if not may_take_over(meta.get("fence"), old.get("fence")):
            msg = (
                f"{store}: an unfinished store created with fencing token {old.get('fence')} "
                f"is there; this writer's token {meta.get('fence')} is older"
            )
            raise StaleOwnerError(msg) from e
    logger.warning("replacing %s: its creation never finished", store)
    return zarr.open_group(store, mode="w", attributes=attrs)


def _unfinished_meta(store: Store) -> dict[str, Any] | None:
    """The metadata of a store of ours whose creation never finished, else None.

    A local directory holding nothing but temporary files (a creator killed while writing
    its first file) counts as unfinished, with no metadata.
    """
    try:
        meta = read_meta(open_root(store, mode="r"), allow_incomplete=True)
    except StoreNotFoundError:
        if isinstance(store, LocalStore):
            files = [p for p in Path(store.root).rglob("*") if p.is_file()]
            if all(p.name.endswith(".partial") for p in files):
                return {}
        return None
    except SchemaMismatchError:
        return None
    return meta if meta.get("status") == CREATING else None


def check_output_root(root: str | Path) -> str:
    """Return ``root`` as text if result stores may be written under it.

    Refuses an empty root and one that is, or resolves to, the filesystem root (``/``,
    ``file:///``, ``/tmp/..``), or a URL without a bucket or path.

    Raises:
        InvalidValueError: With the reason.
    """
    text = str(root).strip()
    if not text:
        msg = "output root is empty: give a directory or fsspec URL, e.g. out/results"
        raise InvalidValueError(msg)
    if "://" in text and not text.startswith("file://"):
        if not text.split("://", 1)[1].strip("/"):
            msg = f"output root {text!r} names no bucket or path"
            raise InvalidValueError(msg)
        return text
    local = text.removeprefix("file://")
    resolved = Path(local or "/").resolve()
    if resolved == resolved.parent:
        msg = (
            f"output root {text!r} is the filesystem root: stores and the embedded server's "
            f"data would go to {resolved}; give a directory such as out/results"
        )
        raise InvalidValueError(msg)
    return text


def refuse_filesystem_root(store: Store) -> None:
    """Refuse a local store placed directly in the filesystem root (an empty or ``/`` root)."""
    if isinstance(store, LocalStore):
        check_output_root(Path(store.root).absolute().parent)


def lock_path(store: Store) -> Path | None:
    """``<store>.lock`` beside a local store (outside it); None for other stores."""
    if not isinstance(store, LocalStore):
        return None
    root = Path(store.root).absolute()
    return root.with_name(root.name + ".lock")


class StoreLock:
    """Re-entrant exclusive OS file lock (flock) on a local store's ``<store>.lock``.

    The owning Writer holds it across "re-read the fencing token, write the block, write the
    watermark", so no other writer of the store can interleave. Readers never take it. For
    stores that are not local directories it is a no-op.

    Args:
        store: The store to lock.
        timeout_s: How long to wait for another holder before raising StorageError.
    """

    def __init__(self, store: Store, timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = lock_path(store)
        self._timeout_s = timeout_s
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> StoreLock:
        if self._depth == 0 and self.path is not None:
            self._fd = _flock(self.path, self._timeout_s)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _flock(path: Path, timeout_s: float) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"timed out after {timeout_s}s waiting for {path}: another writer of "
                        f"this store has been stuck in a commit; stop it and retry"
                    )
                    raise StorageError(msg) from None
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise
