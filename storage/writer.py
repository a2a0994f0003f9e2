"""Writing a job's result store: `Writer` (the single owner) and `BlockWriter` (data only).

A block is ``frames_per_shard`` consecutive frames. Everything a block owns (its frame rows,
its person rows and its shards of every map) lives in storage objects no other block touches,
and every block is written whole, so blocks can be written in any order, by any process, and
re-written after a crash with the same bytes. (The per-person pixel arrays of a schema-v2
store are written packed at the start of each block's segment, and pixels an earlier write
left past the new end are reset first: storage/_pixels.py.) Only the `Writer` creates or
resizes arrays and writes the root attributes, including the commit watermark that readers
trust.

Fencing: a `Writer` made with ``fence=token`` (the job claim's fencing token; tokens only
grow) records it in the root attributes, and every mutation first re-reads that record and
refuses with StaleOwnerError if another token is there: a writer that paused past its lease
cannot commit, finalize or fail a job that a newer owner took over. On local stores the
re-read, the block write and the watermark write happen under an OS file lock on
``<store>.lock``, so the check and the writes are atomic against other writers.

Creation is atomic for readers: the root is created with status ``creating`` and becomes
``running`` only once every array exists; a store whose creation never finished reads as
absent, and `Writer.create` replaces it.

Example:
    >>> from storage.schema import StoreSpec
    >>> from storage.synthetic import synthetic_frame
    >>> spec = StoreSpec.for_source(48, 64, tasks=("pose", "seg"), num_keypoints=17,
    ...                             frames_per_shard=2)
    >>> w = Writer.create("memory://doc/writer.zarr", spec, job={"job_id": "doc"})
    >>> for i in (1, 0, 2):
    ...     _ = w.add(synthetic_frame(spec, i, n_persons=2))
    >>> w.watermark
    2
    >>> w.finalize()
    3
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from zarr.abc.store import Store

from storage import _pixels, _store
from storage._encode import EncodedFrame, assemble_block, encode_frame
from storage.errors import SchemaMismatchError, StaleOwnerError, StorageError
from storage.frame import FrameResult
from storage.provenance import ModelProvenance
from storage.resume import ResumeState
from storage.schema import SCHEMA_VERSION, ArrayLayout, StoreSpec, ZarrLayout

__all__ = ["BlockWriter", "Writer"]

logger = logging.getLogger(__name__)

CommitHook = Callable[[int], None]
"""Called with the new watermark before it is recorded; raising (e.g. LeaseLostError) aborts."""


def _initial_meta(
    spec: StoreSpec,
    job: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    models: Sequence[ModelProvenance | Mapping[str, Any]],
    fence: int | None,
) -> dict[str, Any]:
    """Root attributes of a new store; every model entry must be a valid provenance."""
    entries = [
        m if isinstance(m, ModelProvenance) else ModelProvenance.from_dict(m) for m in models
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "layout": spec.to_dict(),
        "job": dict(job),
        "source": dict(source or {}),
        "models": [m.to_dict() for m in entries],
        "status": "running",
        "committed_frames": 0,
        "person_rows": 0,
        "created_at": time.time(),
        "timings": {},
        "fence": fence,
    }


class BlockWriter:
    """Writes whole blocks into pre-sized arrays; never touches metadata.

    Any number of processes may each hold one, as long as each block has one writer at a time.

    Args:
        path_or_url: Store location (local path or fsspec URL).
    """

    def __init__(self, path_or_url: str | Path) -> None:
        self._store: Store = _store.open_store(path_or_url, read_only=False)
        self._root = _store.open_root(self._store, mode="r+")
        self.layout = ZarrLayout.from_spec(_store.spec_of(_store.read_meta(self._root)))
        self._arrays = _store.open_arrays(self._root, self.layout)

    @property
    def spec(self) -> StoreSpec:
        """The store's spec."""
        return self.layout.spec

    def capacity_blocks(self) -> int:
        """Blocks the arrays are currently sized for."""
        return int(self._arrays["blocks/frames"].shape[0])

    def reopen(self) -> None:
        """Re-read array metadata (after the owner resized the arrays)."""
        self._arrays = _store.open_arrays(self._root, self.layout)

    def write_block(self, block: int, results: Sequence[FrameResult]) -> None:
        """Validate, encode and write one block (idempotent: same input, same bytes).

        Args:
            block: Block number; frames ``block*B .. block*B+len(results)-1``.
            results: The block's frames in order; fewer than B only for a job's last block.

        Raises:
            SchemaMismatchError: If the frames do not fit the store or the block.
        """
        encoded = [encode_frame(self.layout, r) for r in results]
        self.write_encoded(block, encoded)

    def write_encoded(self, block: int, frames: Sequence[EncodedFrame]) -> None:
        """Write a block of already encoded frames; the commit marker is written last."""
        if block >= self.capacity_blocks():
            self.reopen()
        if not 0 <= block < self.capacity_blocks():
            msg = (
                f"block {block} is outside the store's capacity of {self.capacity_blocks()} "
                f"blocks; only the owning Writer grows the arrays"
            )
            raise SchemaMismatchError(msg)
        rows = assemble_block(self.layout, block, frames)
        layouts = self.layout.by_path()
        packed = _pixels.packed_layouts(self.layout, self._arrays)
        if packed:  # before patch_hw is rewritten: it says how far an earlier write went
            new_hw = {_pixels.hw_path(a): rows[_pixels.hw_path(a)] for a in packed}
            _pixels.clear_stale(self._arrays, self.layout, block, new_hw)

        def put(path: str) -> None:
            n = self.layout.rows_for_blocks(layouts[path], 1)
            self._arrays[path][block * n : (block + 1) * n] = rows[path]

        def put_pixels(a: ArrayLayout) -> None:
            patches = [p for f in frames for p in f.patches[a.path]]
            seg = self.spec.pixels_per_block
            _pixels.write_packed(self._arrays[a.path], a, block, seg, patches)

        data = [p for p in rows if p != "blocks/frames" and p in self._arrays]
        # Arrays are independent objects: compress and write them concurrently.
        with ThreadPoolExecutor(max_workers=min(len(data), 4)) as pool:
            list(pool.map(put, data))
            list(pool.map(put_pixels, packed))  # after patch_hw (see storage/_pixels.py)
        put("blocks/frames")  # the commit marker goes last
        logger.debug("wrote block %d (%d frames)", block, len(frames))

    def committed_blocks(self, start: int = 0) -> list[int]:
        """Return the frame counts of the commit markers from block ``start`` on."""
        self.reopen()
        return [int(v) for v in self._arrays["blocks/frames"][start:]]


class Writer:
    """The single owner of a job's store: orders frames, commits blocks, records the watermark.

    Not thread-safe; one instance per job. Use :meth:`create` for a new store and
    :meth:`resume` after a crash; both take the job claim's fencing token (see the module
    docstring). Once a call raised StaleOwnerError, every later call raises it too.

    Args:
        blocks: The data-plane writer of the store.
        on_commit: Hook called with each new watermark before it is recorded.
        fence: This writer's fencing token; None for an unfenced (local, one-off) writer.
    """

    def __init__(
        self,
        blocks: BlockWriter,
        *,
        on_commit: CommitHook | None = None,
        fence: int | None = None,
    ) -> None:
        _store.check_token(fence)
        self._blocks = blocks
        self._root = blocks._root
        self._store = blocks._store
        self._on_commit = on_commit
        self._fence = fence
        self._lock = _store.StoreLock(self._store)
        self._stale: str | None = None
        self._meta = _store.read_meta(self._root)
        self._pending: dict[int, EncodedFrame] = {}
        self._stats = {"dropped_duplicates": 0, "blocks": 0, "write_s": 0.0}
        self._watermark = int(self._meta["committed_frames"])

    @classmethod
    def create(
        cls,
        path_or_url: str | Path,
        spec: StoreSpec,
        *,
        job: Mapping[str, Any],
        source: Mapping[str, Any] | None = None,
        models: Sequence[ModelProvenance | Mapping[str, Any]] = (),
        capacity_frames: int = 0,
        on_commit: CommitHook | None = None,
        fence: int | None = None,
    ) -> Writer:
        """Create a new store (fails if one exists) and return its writer.

        A store whose creation never finished (its creator was killed) is replaced.

        Args:
            path_or_url: Store location (local path or fsspec URL).
            spec: What the store holds.
            job: Job facts (id, resolved spec); must be JSON-serialisable.
            source: Source video facts (uri, size, fps, ...).
            models: One :class:`~storage.provenance.ModelProvenance` (or its ``to_dict``) per
                checkpointed part of the model.
            capacity_frames: Expected frame count, to size arrays once; they grow when needed.
            on_commit: Hook called with each new watermark before it is recorded.
            fence: The job claim's fencing token, recorded as the store's owner.

        Raises:
            SchemaMismatchError: If a model entry is not a valid provenance.
            StorageError: If a store already exists at the location.
            StaleOwnerError: If an unfinished store there records a larger token.
            InvalidValueError: If the location is the filesystem root or ``fence`` is not a
                token.
        """
        _store.check_token(fence)
        store = _store.open_store(path_or_url, read_only=False, must_exist=False)
        _store.refuse_filesystem_root(store)
        meta = _initial_meta(spec, job, source, models, fence)
        layout = ZarrLayout.from_spec(spec)
        n_blocks = max(1, -(-capacity_frames // spec.frames_per_shard))
        with _store.StoreLock(store):
            root = _store.create_root(store, meta)  # durable: "creating" survives a crash
            # Until the status says "running", a crash leaves a store that counts as absent
            # (and is replaced), so the arrays' writes are fsynced together, not one by one.
            with _store.synced_at_exit(store):
                for a in layout.arrays:
                    _store.create_array(root, a, layout.rows_for_blocks(a, n_blocks))
            _store.write_meta(root, meta)  # status "running": the store exists from now on
        logger.info("created result store %s (%s)", path_or_url, ",".join(spec.tasks))
        return cls(BlockWriter(path_or_url), on_commit=on_commit, fence=fence)

    @classmethod
    def resume(
        cls,
        path_or_url: str | Path,
        *,
        on_commit: CommitHook | None = None,
        fence: int | None = None,
    ) -> Writer:
        """Reopen an existing store after a crash; adopts blocks committed past the watermark.

        With a token larger than the store's, the store is taken over: the old owner's next
        mutation fails. Call it only once the previous owner's claim is gone: it also deletes
        the temporary files a killed writer left behind in a local store.

        Raises:
            StoreNotFoundError: If there is no store (or its creation never finished).
            StaleOwnerError: If the store records a larger token than ``fence`` (or any token
                while ``fence`` is None).
            StorageError: If the store is not running (complete or failed).
        """
        writer = cls(BlockWriter(path_or_url), on_commit=on_commit, fence=fence)
        with writer._lock:
            writer._reload()
            recorded = writer._meta.get("fence")
            if not _store.may_take_over(fence, recorded):
                mine = "an unfenced writer" if fence is None else f"token {fence} is older"
                msg = (
                    f"{path_or_url}: the store is owned with fencing token {recorded}; {mine}: "
                    f"resume it with the job's current claim token"
                )
                raise StaleOwnerError(msg)
            status = writer._meta["status"]
            if status != "running":
                msg = f"{path_or_url}: status is {status!r}; only running stores resume"
                raise StorageError(msg)
            if removed := _store.remove_partial_files(writer._store):
                logger.info("removed %d partial files left by a crashed writer", removed)
            if recorded != fence:
                writer._meta["fence"] = fence
                _store.write_meta(writer._root, writer._meta)
                logger.info("took over %s: fencing token %s -> %s", path_or_url, recorded, fence)
            writer.sync_watermark()
        return writer

    def _reload(self) -> None:
        """Re-read the root attributes and array metadata (under the lock, before owning)."""
        self._root = self._blocks._root = _store.open_root(self._store, mode="r+")
        self._blocks.reopen()
        self._meta = _store.read_meta(self._root)
        self._watermark = int(self._meta["committed_frames"])

    @property
    def fence(self) -> int | None:
        """This writer's fencing token (None: unfenced)."""
        return self._fence

    def _check_owner(self) -> None:
        """Re-read the store's commit record; poison this writer if another token is there."""
        if self._stale is None:
            recorded = _store.read_meta(_store.open_root(self._store, mode="r")).get("fence")
            if recorded == self._fence:
                return
            self._stale = (
                f"{self._store}: this writer (fencing token {self._fence}) no longer owns the "
                f"store, which records token {recorded}: a newer owner took the job over. "
                f"Stop working on it; this writer wrote nothing more"
            )
            logger.warning("%s", self._stale)
        raise StaleOwnerError(self._stale)

    @contextlib.contextmanager
    def _owning(self) -> Iterator[None]:
        """Hold the store lock and check ownership around one mutation."""
        if self._stale is not None:
            raise StaleOwnerError(self._stale)
        with self._lock:
            self._check_owner()
            yield

    def _write_meta(self) -> None:
        """Write the root attributes; the ownership re-read comes first, even under the lock."""
        self._check_owner()
        _store.write_meta(self._root, self._meta)

    @property
    def spec(self) -> StoreSpec:
        """The store's spec."""
        return self._blocks.spec

    @property
    def watermark(self) -> int:
        """Frames committed (frames ``0 .. watermark-1`` are final)."""
        return self._watermark

    @property
    def checkpoint(self) -> ResumeState | None:
        """The job's last saved resume state (see :meth:`save_checkpoint`), or None."""
        cp = self._meta.get("checkpoint")
        return ResumeState.from_dict(cp) if cp else None

    def save_checkpoint(self, state: ResumeState) -> None:
        """Record the job's resume state, whose ``frames`` (the frames it covers) must not
        exceed the watermark, so a resumed job can start there instead of at frame 0."""
        frames = state.frames
        if not 0 <= frames <= self._watermark:
            msg = f"checkpoint at {frames} frames is past the watermark {self._watermark}"
            raise StorageError(msg)
        with self._owning():
            self._meta["checkpoint"] = state.to_dict()
            self._write_meta()

    @property
    def pending_frames(self) -> int:
        """Frames received but not committed yet."""
        return len(self._pending)

    def add(self, result: FrameResult) -> int:
        """Accept one frame in any order; commits every block that became complete.

        Frames below the watermark were committed already and are dropped (at-least-once
        delivery upstream). Returns the watermark after the call.
        """
        if self._stale is not None:
            raise StaleOwnerError(self._stale)
        if result.index < self._watermark:
            self._stats["dropped_duplicates"] += 1
            return self._watermark
        self._pending[result.index] = encode_frame(self._blocks.layout, result)
        b = self.spec.frames_per_shard
        while all(i in self._pending for i in range(self._watermark, self._watermark + b)):
            frames = [self._pending.pop(i) for i in range(self._watermark, self._watermark + b)]
            with self._owning():
                self._commit(self._watermark // b, frames)
        return self._watermark

    def commit_block(self, block: int, results: Sequence[FrameResult]) -> None:
        """Write a whole block now; it must be the next block, or an already committed one.

        Re-committing a committed block rewrites the same bytes and leaves the watermark alone.
        """
        b = self.spec.frames_per_shard
        encoded = [encode_frame(self._blocks.layout, r) for r in results]
        if (block + 1) * b <= self._watermark:
            with self._owning():
                self._blocks.write_encoded(block, encoded)
        elif block * b == self._watermark:
            for f in encoded:
                self._pending.pop(f.index, None)
            with self._owning():
                self._commit(block, encoded)
        else:
            msg = f"block {block} is not next: the watermark is at frame {self._watermark}"
            raise SchemaMismatchError(msg)

    def sync_watermark(self) -> int:
        """Advance the watermark over blocks other BlockWriters committed; return it."""
        b = self.spec.frames_per_shard
        with self._owning():
            counts = self._blocks.committed_blocks(self._watermark // b)
            frames = self._watermark
            for n in counts:
                if n != b:
                    break
                frames += n
            if frames > self._watermark:
                self._record(frames)
        return self._watermark

    def ensure_capacity(self, n_frames: int) -> None:
        """Grow every array (in whole blocks, at least doubling) to hold ``n_frames`` frames."""
        with self._owning():
            self._grow(n_frames)

    def _grow(self, n_frames: int) -> None:
        b = self.spec.frames_per_shard
        need = -(-n_frames // b)
        have = self._blocks.capacity_blocks()
        if need <= have:
            return
        self._resize_blocks(max(need, 2 * have))

    def _resize_blocks(self, n_blocks: int) -> None:
        layout = self._blocks.layout
        for a in layout.arrays:
            if a.path == "blocks/frames" or a.path not in self._blocks._arrays:
                continue  # resized last: its length is what BlockWriters take as capacity
            self._blocks._arrays[a.path].resize(a.shape(layout.rows_for_blocks(a, n_blocks)))
        self._blocks._arrays["blocks/frames"].resize((n_blocks,))
        self._blocks.reopen()

    def _commit(self, block: int, frames: Sequence[EncodedFrame]) -> None:
        t0 = time.perf_counter()
        self._grow((block + 1) * self.spec.frames_per_shard)
        self._blocks.write_encoded(block, frames)
        self._stats["write_s"] += time.perf_counter() - t0
        self._stats["blocks"] += 1
        self._record(block * self.spec.frames_per_shard + len(frames))

    def _record(self, frames: int) -> None:
        if self._on_commit is not None:
            self._on_commit(frames)
        self._meta["committed_frames"] = frames
        self._write_meta()
        self._watermark = frames
        logger.debug("watermark %d", frames)

    def finalize(self, *, timings: Mapping[str, float] | None = None) -> int:
        """Commit the last (partial) block, trim arrays, mark complete and consolidate.

        Returns:
            The final frame count.

        Raises:
            SchemaMismatchError: If frames between the watermark and the last one are missing.
            StaleOwnerError: If another writer owns the store now.
        """
        with self._owning():
            return self._finalize(timings)

    def _finalize(self, timings: Mapping[str, float] | None) -> int:
        if self._pending:
            last = max(self._pending)
            missing = sorted(set(range(self._watermark, last + 1)) - set(self._pending))
            if missing or last - self._watermark >= self.spec.frames_per_shard:
                msg = f"cannot finalize: frames {missing[:10]} (of {len(missing)}) never arrived"
                raise SchemaMismatchError(msg)
            frames = [self._pending.pop(i) for i in range(self._watermark, last + 1)]
            self._commit(self._watermark // self.spec.frames_per_shard, frames)
        self._trim()
        self._meta.update(
            status="complete",
            finalized_at=time.time(),
            timings={**self._stats, **(timings or {})},
        )
        self._write_meta()
        _store.consolidate(self._store)
        logger.info("finalized %s: %d frames", self._store, self._watermark)
        return self._watermark

    def mark_failed(self, reason: str) -> None:
        """Record that the job failed; committed frames stay readable.

        Raises:
            StaleOwnerError: If another writer owns the store now (the job is not failed).
        """
        with self._owning():
            self._meta.update(status="failed", error=reason, timings=dict(self._stats))
            self._write_meta()

    def _trim(self) -> None:
        """Shrink every array to the committed frames, person rows and blocks."""
        layout, spec = self._blocks.layout, self.spec
        n_frames = self._watermark
        n_blocks = -(-n_frames // spec.frames_per_shard)
        arrays = self._blocks._arrays
        persons = 0
        if n_frames:
            last = n_frames - 1
            persons = int(arrays["frames/person_offset"][last]) + int(
                arrays["frames/person_count"][last]
            )
        sizes = {"frame": n_frames, "person": persons, "block": n_blocks}
        resized = False
        for a in layout.arrays:
            if a.axis == "pixel":  # up to the last block's last packed pixel
                last_rows = (max(n_blocks - 1, 0) * spec.person_rows_per_block, persons)
                hw = np.asarray(arrays[_pixels.hw_path(a)][slice(*last_rows)]).astype(np.int64)
                used = int((hw[:, 0] * hw[:, 1]).sum())
                shape = a.shape(max(n_blocks - 1, 0) * spec.pixels_per_block + used)
            else:
                shape = a.shape(sizes[a.axis])
            if a.path in arrays and tuple(arrays[a.path].shape) != tuple(shape):
                arrays[a.path].resize(shape)
                resized = True
        self._meta["person_rows"] = persons
        if resized:
            self._blocks.reopen()
