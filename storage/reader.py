"""Query API over a result store: frames, time ranges, persons, tracks, task arrays, xarray.

A reader serves exactly the frames below the commit watermark recorded in the store's root
attributes; it never trusts array shapes (the writer grows arrays ahead of the data). Call
:meth:`ResultReader.refresh` to see frames committed since it was opened.

A per-person store (schema v2, spec with ``patch_size``) keeps each person's dense results on
its box; :meth:`ResultReader.frame` and :meth:`ResultReader.task_arrays` compose the frame
maps from them (:func:`storage.compose_frame_maps`), so they return what a frame-map store
returns, plus each person's own patches.

Example:
    >>> from storage.schema import StoreSpec
    >>> from storage.synthetic import synthetic_frame
    >>> from storage.writer import Writer
    >>> spec = StoreSpec.for_source(48, 64, tasks=("seg", "depth"), frames_per_shard=2)
    >>> w = Writer.create("memory://doc/reader.zarr", spec, job={"job_id": "doc"})
    >>> for i in range(5):
    ...     _ = w.add(synthetic_frame(spec, i, n_persons=2))
    >>> r = open_result("memory://doc/reader.zarr")
    >>> r.num_frames, r.status
    (4, 'running')
    >>> _ = w.finalize(); r.refresh()
    5
    >>> f = r.frame(4)
    >>> len(f.persons), f.depth.dtype, r.track(100).frames.tolist()
    (2, dtype('float32'), [0, 1, 2, 3, 4])
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from storage import _patches, _store
from storage._encode import PTS_UNKNOWN, decode_normal
from storage.errors import (
    FrameNotCommittedError,
    InvalidValueError,
    SchemaMismatchError,
    StoreNotFoundError,
)
from storage.provenance import ModelProvenance
from storage.results import FrameData, FrameTable, PersonPatches, Persons, StoreSummary, Track
from storage.resume import ResumeState
from storage.schema import DENSE_TASKS, FRAME_STATUS, StoreSpec, Task, ZarrLayout

if TYPE_CHECKING:
    import xarray

__all__ = ["ResultReader", "StoreState", "open_result", "store_state"]

logger = logging.getLogger(__name__)

_TABLE_FIELDS = ("source_index", "pts", "time_s", "person_offset", "person_count", "status")
_MAP_PATHS = {
    "part": "seg/part",
    "person_map": "seg/person",
    "depth": "depth/relative",
    "normal": "normal/xyz",
    "pointmap": "pointmap/xyz",
}
_TASK_KEYS: dict[Task, dict[str, str]] = {
    "seg": {"part": "part", "person_map": "person"},
    "depth": {"depth": "relative"},
    "normal": {"normal": "xyz"},
    "pointmap": {"pointmap": "xyz"},
}
_PATCH_KEYS: dict[Task, dict[str, str]] = {
    "seg": {"part_patch": "part_patch", "fg_patch": "fg_patch"},
    "depth": {"patch": "depth_patch"},
    "normal": {"patch": "normal_patch"},
    "pointmap": {"patch": "pointmap_patch", "scale": "pointmap_scale"},
}
"""Per dense task: task_arrays key -> PersonPatches field of a per-person store."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreState:
    """What a job's runner needs to know of its store, from one read of its metadata.

    Attributes:
        status: ``running``, ``complete`` or ``failed``.
        frames: committed frames (the watermark).
        checkpoint: the job's resume state saved with the store, or None.
    """

    status: str
    frames: int
    checkpoint: ResumeState | None


def store_state(path_or_url: str | Path) -> StoreState | None:
    """The state of the store at ``path_or_url``; None when there is none (or its creation
    never finished)."""
    try:
        reader = ResultReader(path_or_url)
    except StoreNotFoundError:
        return None
    checkpoint = reader.attrs.get("checkpoint")
    return StoreState(
        status=reader.status,
        frames=reader.num_frames,
        checkpoint=ResumeState.from_dict(checkpoint) if checkpoint else None,
    )


def open_result(path_or_url: str | Path) -> ResultReader:
    """Open a result store for reading (local path or fsspec URL).

    Raises:
        StoreNotFoundError: If there is no store at the location.
        SchemaMismatchError: If it is not a store of a supported schema version.
    """
    return ResultReader(path_or_url)


class ResultReader:
    """Read-only view of one job's store; see the module docstring for an example.

    Args:
        path_or_url: Store location (local path or fsspec URL).
    """

    def __init__(self, path_or_url: str | Path) -> None:
        self.uri = str(path_or_url)
        self._store = _store.open_store(path_or_url, read_only=True)
        self._meta: dict[str, Any] = {}
        self._arrays: dict[str, zarr.Array] = {}
        self._table: FrameTable | None = None
        self._rows_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        root = _store.open_root(self._store, mode="r")
        self.layout = ZarrLayout.from_spec(_store.spec_of(_store.read_meta(root)))
        self.refresh()

    # -- state -------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Re-read the watermark (and array metadata if arrays grew); return committed frames."""
        meta = _store.read_meta(_store.open_root(self._store, mode="r"))
        complete = meta.get("status") == "complete"
        frames = int(meta["committed_frames"])
        newly_complete = complete and self._meta.get("status") != "complete"
        if not self._arrays or newly_complete or frames > self._capacity_frames():
            # Arrays grew (or were trimmed at finalize): reload their metadata. Committed
            # rows never change, so the cached frame table and track index stay valid.
            root = _store.open_root(self._store, mode="r", consolidated=complete)
            self._arrays = _store.open_arrays(root, self.layout)
        self._meta = meta
        return frames

    def _capacity_frames(self) -> int:
        return int(self._arrays["frames/source_index"].shape[0]) if self._arrays else 0

    @property
    def spec(self) -> StoreSpec:
        """The store's spec."""
        return self.layout.spec

    @property
    def num_frames(self) -> int:
        """Committed frames as of the last :meth:`refresh`."""
        return int(self._meta["committed_frames"])

    @property
    def status(self) -> str:
        """``running``, ``complete`` or ``failed``."""
        return str(self._meta["status"])

    @property
    def models(self) -> list[ModelProvenance]:
        """Which model made the results: one entry per checkpointed part.

        Raises:
            SchemaMismatchError: an entry of the store is not a valid provenance.
        """
        raw = self._meta.get("models", [])
        if not isinstance(raw, list):
            raise SchemaMismatchError("store attribute 'models': expected a list")
        return [ModelProvenance.from_dict(m) for m in raw]

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's metadata: job, source, models, layout, timings."""
        return dict(self._meta)

    # -- frames ------------------------------------------------------------------------------
    def _check_range(self, start: int, stop: int | None) -> tuple[int, int]:
        n = self.num_frames
        stop = n if stop is None else stop
        if not 0 <= start <= stop <= n:
            msg = f"{self.uri}: frames [{start}, {stop}) requested, {n} committed"
            raise FrameNotCommittedError(msg)
        return start, stop

    def read_frames(self, start: int = 0, stop: int | None = None) -> FrameTable:
        """Return per-frame scalars of committed frames ``start .. stop-1`` (default: all)."""
        start, stop = self._check_range(start, stop)
        table = self._cached_table()
        values = {f: getattr(table, f)[start:stop] for f in _TABLE_FIELDS}
        return FrameTable(start=start, **values)

    def _cached_table(self) -> FrameTable:
        """All committed frames' scalars; committed rows never change, so they are cached."""
        if self._table is None:
            empty = {f: np.zeros(0, self._column_dtype(f)) for f in _TABLE_FIELDS}
            self._table = FrameTable(start=0, **empty)
        have, n = len(self._table), self.num_frames
        if have < n:
            new = {
                f: np.concatenate([getattr(self._table, f), self._column(f, have, n)])
                for f in _TABLE_FIELDS
            }
            self._table = FrameTable(start=0, **new)
        return self._table

    def _column_dtype(self, field: str) -> np.dtype:
        array = self._arrays.get(f"frames/{field}")
        return np.dtype(np.uint8) if array is None else array.dtype

    def _column(self, field: str, start: int, stop: int) -> np.ndarray:
        array = self._arrays.get(f"frames/{field}")
        if array is None:  # frames/status, in a store written before it existed: all analysed
            return np.full(stop - start, FRAME_STATUS["ok"], np.uint8)
        return np.asarray(array[start:stop])

    def time_range(self, start_s: float, stop_s: float) -> np.ndarray:
        """Return committed frame indices with ``start_s <= time_s < stop_s``, ascending."""
        t = self._cached_table().time_s[: self.num_frames]
        return np.flatnonzero((t >= start_s) & (t < stop_s)).astype(np.int64)

    def frame(self, index: int, *, size: tuple[int, int] | None = None) -> FrameData:
        """Return everything stored for committed frame ``index``.

        Args:
            index: The frame.
            size: (H, W) of the maps; default the store's output size. A per-person store
                composes them at that size; a frame-map store resamples its maps (nearest).
        """
        self._check_range(index, index + 1)
        out_size = self._out_size(size)
        table = self.read_frames(index, index + 1)
        pts = int(table.pts[0])
        rows = table.person_rows()
        persons = self._read_person_rows(rows)
        patches: PersonPatches | None = None
        if self.spec.per_person:
            dense = self._dense_tasks()
            patches = _patches.read_patches(self._arrays, rows, dense, self.spec)
            maps = _patches.compose_fields(
                self.spec, patches, persons.box_xyxy, persons.score, out_size, dense
            )
        else:
            maps = {k: v[0] for k, v in self._read_maps(index, index + 1, out_size).items()}
        return FrameData(
            index=index,
            source_index=int(table.source_index[0]),
            pts=None if pts == PTS_UNKNOWN else pts,
            time_s=float(table.time_s[0]),
            status=table.statuses()[0],
            persons=persons,
            patches=patches,
            **maps,
        )

    def _dense_tasks(self) -> tuple[Task, ...]:
        return tuple(t for t in self.spec.tasks if t in DENSE_TASKS)

    def _out_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        if size is None:
            return self.spec.height, self.spec.width
        if not (
            isinstance(size, tuple | list)
            and len(size) == 2
            and all(isinstance(v, int | np.integer) and v >= 1 for v in size)
        ):
            msg = f"{self.uri}: size: expected (height, width), two ints >= 1, got {size!r}"
            raise InvalidValueError(msg)
        return int(size[0]), int(size[1])

    def persons(self, start: int, stop: int | None = None) -> Persons:
        """Return persons of frame ``start`` (or of frames ``start .. stop-1``), frame order."""
        stop = start + 1 if stop is None else stop
        return self._read_person_rows(self.read_frames(start, stop).person_rows())

    def _read_person_rows(self, rows: np.ndarray) -> Persons:
        if rows.size == 0:
            lo = hi = 0
        else:
            lo, hi = int(rows[0]), int(rows[-1]) + 1
        local = rows - lo

        def get(path: str) -> np.ndarray:
            return np.asarray(self._arrays[path][lo:hi])[local]

        pose = self.spec.has("pose")
        return Persons(
            frame=get("persons/frame"),
            track_id=get("persons/track_id"),
            box_xyxy=get("persons/box_xyxy"),
            score=get("persons/score"),
            keypoints_xy=get("pose/keypoints_xy") if pose else None,
            keypoint_score=get("pose/keypoint_score").astype(np.float32) if pose else None,
        )

    # -- tracks ------------------------------------------------------------------------------
    def _committed_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, track_id) of every person in committed frames; cached per watermark."""
        n = self.num_frames
        if self._rows_cache is None or self._rows_cache[0] != n:
            rows = self.read_frames(0, n).person_rows()
            end = int(rows[-1]) + 1 if rows.size else 0
            track = np.asarray(self._arrays["persons/track_id"][:end])[rows]
            self._rows_cache = (n, rows, track)
        return self._rows_cache[1], self._rows_cache[2]

    def track_ids(self) -> np.ndarray:
        """Distinct track ids in committed frames, ascending (-1, the id of untracked
        persons, is no track and is left out; ``track(-1)`` returns those persons)."""
        ids = np.unique(self._committed_rows()[1])
        return ids[ids >= 0]

    def track(self, track_id: int) -> Track:
        """Return one track across all committed frames (empty if the id never occurs)."""
        rows, track = self._committed_rows()
        return Track(
            track_id=int(track_id), persons=self._read_sparse_rows(rows[track == track_id])
        )

    def _read_sparse_rows(self, rows: np.ndarray) -> Persons:
        """Read scattered rows block by block (one contiguous read per block touched)."""
        if rows.size == 0:
            return self._read_person_rows(rows)
        per_block = self.spec.person_rows_per_block
        parts = [
            self._read_person_rows(rows[rows // per_block == b])
            for b in np.unique(rows // per_block)
        ]
        fields = ("frame", "track_id", "box_xyxy", "score", "keypoints_xy", "keypoint_score")
        merged: dict[str, Any] = {}
        for f in fields:
            values = [getattr(p, f) for p in parts]
            merged[f] = None if values[0] is None else np.concatenate(values)
        return Persons(**merged)

    # -- task arrays -------------------------------------------------------------------------
    def _read_maps(
        self, start: int, stop: int, size: tuple[int, int] | None = None
    ) -> dict[str, np.ndarray]:
        wanted = {k: p for k, p in _MAP_PATHS.items() if p in self._arrays}
        if not wanted:
            return {}
        with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
            futures = {
                k: pool.submit(self._arrays[p].__getitem__, slice(start, stop))
                for k, p in wanted.items()
            }
            out = {k: np.asarray(f.result()) for k, f in futures.items()}
        for name in ("depth", "pointmap"):
            if name in out:
                out[name] = out[name].astype(np.float32)
        if "normal" in out:
            out["normal"] = decode_normal(out["normal"])
        if size is not None and size != (self.spec.height, self.spec.width):
            out = {k: _resize_stack(v, size) for k, v in out.items()}
        return out

    def task_arrays(
        self,
        task: Task,
        start: int = 0,
        stop: int | None = None,
        *,
        size: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Return one task's decoded arrays for committed frames ``start .. stop-1``.

        ``pose`` gives ``keypoints_xy`` (P, K, 2), ``keypoint_score`` (P, K) and compact CSR
        ``person_offset`` (n+1,); ``seg`` gives ``part`` and ``person`` (n, H, W); ``depth``
        gives ``relative`` (n, H, W) float32; ``normal`` gives ``xyz`` (n, H, W, 3) float32;
        ``pointmap`` gives ``xyz`` (n, H, W, 3) float32 metric x, y, z (NaN off-person).
        ``size`` (H, W) changes the maps' size (default: the store's output size).

        A per-person store composes those maps and adds each person's patches, in frame order
        (frame j's persons are ``[person_offset[j], person_offset[j+1])``): ``patch_box``
        (P, 4), ``person_offset``, ``patch_hw`` (P, 2) int32 (h, w of each person's patch of
        the task), and ``part_patch`` and ``fg_patch`` (seg) or ``patch`` (depth: float32,
        scale applied; normal: float32 unit vectors; pointmap: float32 metric xyz, raw / s),
        tuples of P arrays; pointmap also gives ``scale`` (P,) float32, the model's s.

        Raises:
            SchemaMismatchError: If the task is not enabled in this store.
        """
        if not self.spec.has(task):
            msg = f"{self.uri}: task {task!r} is not in this store (tasks: {self.spec.tasks})"
            raise SchemaMismatchError(msg)
        start, stop = self._check_range(start, stop)
        out_size = self._out_size(size)
        if task == "pose":
            table = self.read_frames(start, stop)
            p = self._read_person_rows(table.person_rows())
            return {
                "keypoints_xy": p.keypoints_xy,
                "keypoint_score": p.keypoint_score,
                "person_offset": table.csr_offsets(),
            }
        if self.spec.per_person:
            return self._per_person_arrays(task, start, stop, out_size)
        maps = self._read_maps(start, stop, out_size)
        return {new: maps[old] for old, new in _TASK_KEYS[task].items()}

    def _per_person_arrays(
        self, task: Task, start: int, stop: int, size: tuple[int, int]
    ) -> dict[str, Any]:
        """task_arrays of a per-person store: composed maps plus the persons' patches."""
        table = self.read_frames(start, stop)
        rows = table.person_rows()
        persons = self._read_person_rows(rows)
        needed = tuple(t for t in self._dense_tasks() if t in (task, "seg"))  # seg: ownership
        patches = _patches.read_patches(self._arrays, rows, needed, self.spec)
        maps = _patches.composed_range(
            self.spec, table, patches, persons.box_xyxy, persons.score, size, (task,)
        )
        out: dict[str, Any] = {new: maps[old] for old, new in _TASK_KEYS[task].items()}
        out["patch_box"] = patches.patch_box
        out["person_offset"] = table.csr_offsets()
        for key, field in _PATCH_KEYS[task].items():
            out[key] = getattr(patches, field)
        first = next(iter(_PATCH_KEYS[task].values()))
        shapes = [p.shape[:2] for p in getattr(patches, first)]
        out["patch_hw"] = np.array(shapes, np.int32).reshape(len(shapes), 2)
        return out

    # -- summaries and views -----------------------------------------------------------------
    def summary(self) -> StoreSummary:
        """Return frames, persons, tracks and tasks of the committed part of the store."""
        table = self.read_frames()
        times = table.time_s
        spec = self.spec
        return StoreSummary(
            uri=self.uri,
            job_id=self._meta.get("job", {}).get("job_id"),
            status=self.status,
            frames=len(table),
            persons=int(table.person_count.sum()),
            tracks=int(self.track_ids().size),
            tasks=tuple(spec.tasks),
            output_size=(spec.height, spec.width),
            source_size=(spec.source_height, spec.source_width),
            num_keypoints=spec.num_keypoints,
            duration_s=float(times.max() - times.min()) if len(table) > 1 else 0.0,
        )

    def to_xarray(self) -> xarray.Dataset:
        """Return a lazily loaded xarray Dataset of the committed frames (needs xarray)."""
        from storage._xarray import build_dataset

        return build_dataset(self)


def _resize_stack(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resample of (n, h, w[, c]) maps to (n, H, W[, c])."""
    h, w = maps.shape[1:3]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.intp), w - 1)
    return maps[:, rows[:, None], cols[None, :]]
