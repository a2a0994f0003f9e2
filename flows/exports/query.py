"""Query a result store for its people: one frame (by index, or the frame nearest a time) or one
track, as a JSON-ready dict or as CSV rows.

One *row* is one person in one frame: ``frame``, ``time_s``, ``track_id``, detection ``score``,
``box_xyxy`` (source pixels) and, per task asked for:

* ``pose``: ``keypoints`` (K, 3) ``[x, y, score]`` in source pixels, named by the store's
  keypoint set (``keypoint_names``);
* ``seg``: ``area_px`` (pixels the person owns in the frame's maps, at the store's output size)
  and ``parts`` (those pixels per part-class name);
* ``depth``: ``depth_median``, the median relative depth over those pixels;
* ``normal``: ``normal_mean``, the mean unit normal over them (renormalised);
* ``pointmap``: ``xyz_median``, the per-axis median metric x, y, z over them (Sapiens2).

Per-person values of the dense tasks need to know which pixels are whose: the store's seg task
(``FrameData.person_map``). JSON is columnar: one list entry per row under each key, frame-level
values once. CSV has one line per row, or per row and keypoint when ``pose`` is asked for.

Example:
    >>> from storage import StoreSpec, Writer, open_result
    >>> from storage.synthetic import synthetic_frame
    >>> spec = StoreSpec.for_source(48, 64, num_keypoints=17, tasks=("pose", "seg"))
    >>> w = Writer.create("memory://doc/query.zarr", spec, job={"job_id": "doc"})
    >>> for i in range(3):
    ...     _ = w.add(synthetic_frame(spec, i, n_persons=2))
    >>> _ = w.finalize()
    >>> r = open_result("memory://doc/query.zarr")
    >>> out = query_frame(r, 1, tasks=("pose", "seg"))
    >>> out["track_id"], out["keypoint_names"][9], len(out["keypoints"][0])
    ([100, 101], 'left_wrist', 17)
    >>> query_track(r, 101)["frame"]
    [0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from flows.exports._common import ExportError, class_set, keypoint_names, num
from storage import DENSE_TASKS, TASKS, FrameData, ResultReader

__all__ = [
    "check_tasks",
    "csv_header",
    "csv_lines",
    "frame_rows",
    "nearest_frame",
    "query_frame",
    "query_track",
    "track_rows",
]

_ROW_KEYS = ("frame", "time_s", "track_id", "score", "box_xyxy")
_DENSE_KEYS = {
    "area_px": "seg",
    "parts": "seg",
    "depth_median": "depth",
    "normal_mean": "normal",
    "xyz_median": "pointmap",
}
"""Row keys of the dense tasks' per-person values."""


def nearest_frame(reader: ResultReader, time_s: float) -> int:
    """The committed frame whose ``time_s`` is nearest ``time_s`` (the earlier one on a tie).

    Raises:
        ExportError: If no committed frame has a known time.
    """
    t = reader.read_frames().time_s
    finite = np.isfinite(t)
    if not finite.any():
        msg = f"{reader.uri}: no committed frame has a known time ({len(t)} frames)"
        raise ExportError(msg)
    return int(np.argmin(np.where(finite, np.abs(t - time_s), np.inf)))


def check_tasks(reader: ResultReader, tasks: Sequence[str] | None) -> tuple[str, ...]:
    """The tasks to report, in canonical order; default: pose if the store has it.

    Raises:
        ExportError: For a task the store lacks, or a dense task in a store without seg.
    """
    spec = reader.spec
    if tasks is None:
        return ("pose",) if spec.has("pose") else ()
    if unknown := [t for t in tasks if t not in TASKS]:
        raise ExportError(f"unknown task(s) {unknown}; expected some of {list(TASKS)}")
    if missing := [t for t in tasks if not spec.has(t)]:
        msg = f"{reader.uri}: task(s) {missing} not in this store (tasks: {list(spec.tasks)})"
        raise ExportError(msg)
    if any(t in DENSE_TASKS for t in tasks) and not spec.has("seg"):
        msg = (
            f"{reader.uri}: per-person {[t for t in tasks if t in DENSE_TASKS]} values need "
            f"the seg task (which pixels are whose); this store has {list(spec.tasks)}: "
            "export --format npz gives its maps"
        )
        raise ExportError(msg)
    return tuple(t for t in TASKS if t in tasks)


def query_frame(
    reader: ResultReader,
    index: int,
    *,
    tasks: Sequence[str] | None = None,
    track: int | None = None,
) -> dict[str, Any]:
    """One frame's people (only track ``track``'s, if given) as a JSON-ready dict.

    Raises:
        FrameNotCommittedError: If the frame is not committed (an IndexError).
        ExportError: For a task the store cannot answer (see :func:`check_tasks`).
    """
    tasks = check_tasks(reader, tasks)
    table = reader.read_frames(index, index + 1)
    rows = list(frame_rows(reader, index, tasks, track))
    head = {
        "store": reader.uri,
        "frame": index,
        "source_index": int(table.source_index[0]),
        "time_s": num(table.time_s[0]),
        "status": table.statuses()[0],
    }
    return {**head, **_columns(reader, rows, tasks, skip=("frame", "time_s"))}


def query_track(
    reader: ResultReader, track_id: int, *, tasks: Sequence[str] | None = None
) -> dict[str, Any]:
    """One track across the committed frames as a JSON-ready dict (one entry per frame).

    Raises:
        ExportError: If the track never occurs, or for a task the store cannot answer.
    """
    tasks = check_tasks(reader, tasks)
    rows = list(track_rows(reader, track_id, tasks))
    head = {"store": reader.uri, "track_id": int(track_id)}
    return {**head, **_columns(reader, rows, tasks, skip=("track_id",))}


def track_rows(reader: ResultReader, track_id: int, tasks: Sequence[str]) -> Iterator[dict]:
    """The rows of one track, frame by frame.

    Raises:
        ExportError: If the track never occurs in the committed frames.
    """
    frames = np.unique(reader.track(track_id).frames)
    if frames.size == 0:
        ids = reader.track_ids().tolist()
        shown = ", ".join(map(str, ids[:20])) + (", ..." if len(ids) > 20 else "")
        msg = (
            f"{reader.uri}: track {track_id} does not occur in the {reader.num_frames} "
            f"committed frames (tracks: {shown or 'none'})"
        )
        raise ExportError(msg)
    for f in frames.tolist():
        yield from frame_rows(reader, f, tasks, track_id)


def frame_rows(
    reader: ResultReader, index: int, tasks: Sequence[str], track: int | None = None
) -> Iterator[dict]:
    """The rows of one frame (only track ``track``'s, if given), for tasks checked by
    :func:`check_tasks`."""
    dense = [t for t in tasks if t in DENSE_TASKS]
    data = reader.frame(index) if dense else None
    persons = data.persons if data is not None else reader.persons(index)
    time_s = num(reader.read_frames(index, index + 1).time_s[0])
    values = _dense_values(reader, data, dense) if data is not None else {}
    for k in range(len(persons)):
        if track is not None and int(persons.track_id[k]) != track:
            continue
        row: dict[str, Any] = {
            "frame": index,
            "time_s": time_s,
            "track_id": int(persons.track_id[k]),
            "score": num(persons.score[k]),
            "box_xyxy": [num(v) for v in persons.box_xyxy[k]],
        }
        if "pose" in tasks and persons.keypoints_xy is not None:
            assert persons.keypoint_score is not None
            row["keypoints"] = np.concatenate(
                [persons.keypoints_xy[k], persons.keypoint_score[k][:, None]], axis=1
            )
        row.update({name: v[k] for name, v in values.items()})
        yield row


def _dense_values(reader: ResultReader, data: FrameData, dense: Sequence[str]) -> dict[str, list]:
    """Per dense task, each person's value over the pixels it owns in ``data``'s maps."""
    assert data.person_map is not None
    owner = np.asarray(data.person_map).ravel().astype(np.int64)
    n = len(data.persons)
    masks = [owner == k + 1 for k in range(n)]
    out: dict[str, list] = {}
    if "seg" in dense:
        assert data.part is not None
        names = class_set(reader)[0]
        c = len(names)
        counts = np.bincount(owner * c + np.asarray(data.part).ravel(), minlength=(n + 1) * c)
        counts = counts[: (n + 1) * c].reshape(n + 1, c)[1:]
        out["area_px"] = [int(row.sum()) for row in counts]
        out["parts"] = [{names[j]: int(v) for j, v in enumerate(row) if v} for row in counts]
    if "depth" in dense:
        assert data.depth is not None
        depth = np.asarray(data.depth).ravel()
        out["depth_median"] = [_median(depth[m]) for m in masks]
    if "normal" in dense:
        assert data.normal is not None
        normal = np.asarray(data.normal).reshape(-1, 3)
        out["normal_mean"] = [_mean_direction(normal[m]) for m in masks]
    if "pointmap" in dense:
        assert data.pointmap is not None
        xyz = np.asarray(data.pointmap).reshape(-1, 3)
        out["xyz_median"] = [[_median(xyz[m, a]) for a in range(3)] for m in masks]
    return out


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return num(np.median(finite.astype(np.float64))) if finite.size else None


def _mean_direction(normals: np.ndarray) -> list[float] | None:
    mean = normals.astype(np.float64).sum(axis=0)
    norm = float(np.linalg.norm(mean))
    return [float(v) for v in mean / norm] if normals.size and norm > 0 else None


def _columns(
    reader: ResultReader, rows: list[dict], tasks: Sequence[str], *, skip: Sequence[str]
) -> dict[str, Any]:
    """Rows as columns: one list per key, one entry per row."""
    keys = [k for k in _ROW_KEYS if k not in skip]
    out: dict[str, Any] = {k: [r[k] for r in rows] for k in keys}
    if "pose" in tasks:
        out["keypoint_names"] = list(keypoint_names(reader))
        out["keypoints"] = [[[num(v) for v in kp] for kp in r["keypoints"]] for r in rows]
    for key, task in _DENSE_KEYS.items():
        if task in tasks:
            out[key] = [r[key] for r in rows]
    return out


def csv_header(reader: ResultReader, tasks: Sequence[str]) -> list[str]:
    """The CSV columns of rows with ``tasks``."""
    cols = ["frame", "time_s", "track_id", "score", "x0", "y0", "x1", "y1"]
    if "seg" in tasks:
        cols += ["area_px", *(f"part_{n}" for n in class_set(reader)[0])]
    if "depth" in tasks:
        cols.append("depth_median")
    if "normal" in tasks:
        cols += ["normal_x", "normal_y", "normal_z"]
    if "pointmap" in tasks:
        cols += ["x_m", "y_m", "z_m"]
    if "pose" in tasks:
        cols += ["keypoint_index", "keypoint", "x", "y", "keypoint_score"]
    return cols


def csv_lines(reader: ResultReader, rows: Iterator[dict], tasks: Sequence[str]) -> Iterator[list]:
    """CSV lines of ``rows`` (columns of :func:`csv_header`; empty cells for unknown values):
    one per row, or one per row and keypoint with pose."""
    classes = class_set(reader)[0] if "seg" in tasks else ()
    names = keypoint_names(reader) if "pose" in tasks else ()
    for r in rows:
        line: list[Any] = [r["frame"], r["time_s"], r["track_id"], r["score"], *r["box_xyxy"]]
        if "seg" in tasks:
            line += [r["area_px"], *(r["parts"].get(n, 0) for n in classes)]
        if "depth" in tasks:
            line.append(r["depth_median"])
        if "normal" in tasks:
            line += r["normal_mean"] or [None] * 3
        if "pointmap" in tasks:
            line += r["xyz_median"]
        if "pose" not in tasks:
            yield [_cell(v) for v in line]
            continue
        for j, (x, y, s) in enumerate(r["keypoints"]):
            yield [_cell(v) for v in (*line, j, names[j], num(x), num(y), num(s))]


def _cell(value: Any) -> Any:
    return "" if value is None else value
