"""Many videos at once: ``sapiens-stream submit DIR|GLOB|manifest.jsonl`` queues one job per
video, idempotently.

A video's job id is derived from its source and its resolved job options (``<stem>-<hash>``;
the hash covers every option that differs from its default, so options added later with a
default do not change existing ids, and ``priority``, which changes no result, is left out),
unless a manifest line names one. Submitting the same videos again therefore finds their jobs:
it skips those queued, running or succeeded, and queues those that failed or were cancelled
again (``Coordinator.retry``: each continues its store from the frames it committed); a video
whose store is already complete (a job ``run`` drove, or whose record expired) is skipped too.
Local paths are queued as absolute paths, so the service finds them wherever it runs and ids
do not depend on the directory the command ran in.

Sources:

- a directory: the video files in it (by suffix, not its subdirectories), by name;
- a glob (``clips/**/*.mp4``; for object stores ``s3://bucket/clips/*.mp4``), or an
  object-store prefix ending in ``/``;
- a manifest (a local ``*.jsonl`` file): one JSON object per line with ``source`` and
  optionally ``job_id`` and any job spec key (``sampling``, ``model``, ...), which override
  the command line's for that video; relative paths are relative to the manifest.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.errors import SpecError, one_line
from flows.spec import JobSpec
from media import OBJECT_STORE_SCHEMES

__all__ = [
    "VIDEO_SUFFIXES",
    "BatchItem",
    "BatchOutcome",
    "expand_sources",
    "is_batch",
    "job_id_for",
    "submit_many",
]

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv"}
    | {".wmv", ".y4m", ".mjpeg", ".mxf", ".3gp"}
)
_NOT_HASHED = ("job_id", "priority")  # priority orders the queue; it changes no result
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem:
    """One video of a batch: where it was listed and what its job overrides."""

    where: str  # the path as listed, or "manifest.jsonl:3"
    source: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None  # a manifest line that could not be read


@dataclass(slots=True)
class BatchOutcome:
    """What a batch submit did with each video."""

    queued: list[dict[str, str]] = field(default_factory=list)
    requeued: list[dict[str, str]] = field(default_factory=list)  # failed/cancelled, again
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return len(self.queued) + len(self.requeued) + len(self.skipped) + len(self.failed)

    def summary(self) -> str:
        states: dict[str, int] = {}
        for s in self.skipped:
            states[s["state"]] = states.get(s["state"], 0) + 1
        why = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        skipped = f"skipped {len(self.skipped)}" + (f" ({why})" if why else "")
        again = f"requeued {len(self.requeued)}"
        return f"queued {len(self.queued)}, {again}, {skipped}, failed to queue {len(self.failed)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "requeued": self.requeued,
            "skipped": self.skipped,
            "failed": self.failed,
        }


def _scheme(text: str) -> str:
    match = _URL.match(text)
    return match.group(1).lower() if match else ""


def is_batch(target: str) -> bool:
    """Whether ``submit``'s argument names many videos (directory, glob, manifest)."""
    scheme = _scheme(target)
    if scheme and scheme not in OBJECT_STORE_SCHEMES:
        return False  # http(s), rtsp...: one video, whatever its query string holds
    if target.endswith(".jsonl") or glob.has_magic(target):
        return True
    return target.endswith("/") if scheme else Path(target).is_dir()


def _is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def expand_sources(target: str) -> list[BatchItem]:
    """The videos ``target`` names, in order.

    Raises:
        SpecError: nothing readable there, or no video in it.
    """
    if target.endswith(".jsonl"):
        items = list(_manifest(target))
    elif _scheme(target):
        items = [BatchItem(where=u, source=u) for u in _remote_listing(target)]
    elif glob.has_magic(target):
        paths = sorted(p for p in glob.glob(target, recursive=True) if os.path.isfile(p))
        items = [BatchItem(where=p, source=os.path.abspath(p)) for p in paths]
    else:
        paths = sorted(str(p) for p in Path(target).iterdir() if p.is_file() and _is_video(p.name))
        items = [BatchItem(where=p, source=os.path.abspath(p)) for p in paths]
    if not items:
        kinds = ", ".join(sorted(VIDEO_SUFFIXES))
        what = "line" if target.endswith(".jsonl") else f"video file ({kinds})"
        raise SpecError(f"{target}: no {what} found")
    return items


def _remote_listing(target: str) -> list[str]:
    import fsspec

    scheme = _scheme(target)
    try:
        fs, path = fsspec.core.url_to_fs(target)
        if glob.has_magic(target):
            found = fs.glob(path, detail=True)
            files = [n for n, info in found.items() if info.get("type") == "file"]
        else:
            listed = fs.ls(path, detail=True)
            files = [i["name"] for i in listed if i.get("type") == "file" and _is_video(i["name"])]
    except (ImportError, OSError, ValueError) as e:
        raise SpecError(f"cannot list {target}: {one_line(str(e))}") from e
    return sorted(f"{scheme}://{n.lstrip('/')}" for n in files)


def _manifest(target: str) -> Iterator[BatchItem]:
    try:
        lines = Path(target).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read manifest {target}: {e}") from e
    base = Path(target).resolve().parent
    for number, line in enumerate(lines, 1):
        where = f"{target}:{number}"
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            yield BatchItem(where=where, error=f"not JSON ({e.msg} at column {e.colno})")
            continue
        source = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(source, str) or not source:
            yield BatchItem(where=where, error='expected an object with a "source" string')
            continue
        if not _scheme(source) and not os.path.isabs(source):
            source = str(base / source)
        overrides = {k: v for k, v in entry.items() if k != "source"}
        yield BatchItem(where=where, source=source, overrides=overrides)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _changed(value: Mapping[str, Any], default: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` less what equals ``default``, recursively; emptied mappings are left out."""
    out = {}
    for key, v in value.items():
        d = default.get(key)
        if key in default and v == d:
            continue
        out[key] = _changed(v, d) if isinstance(v, Mapping) and isinstance(d, Mapping) else v
    return out


def job_id_for(spec: JobSpec) -> str:
    """``<stem>-<16 hex>``: the video's name and a hash of its source and resolved options."""
    raw = {k: v for k, v in spec.to_dict().items() if k not in _NOT_HASHED}
    defaults = JobSpec(source=spec.source, job_id="x").to_dict()
    options = {"source": spec.source, **_changed(raw, defaults)}
    text = json.dumps(options, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    name = spec.source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.splitext(name)[0]).strip("-_")[:40]
    return f"{stem or 'video'}-{digest}"


def submit_many(
    coord: Any,
    base: Mapping[str, Any],
    items: list[BatchItem],
    *,
    on_item: Callable[[BatchOutcome], None] | None = None,
) -> BatchOutcome:
    """Queue a job per item (``base``: the command line's spec as plain data, without a job
    id); queue again those whose job failed or was cancelled; skip those whose job is queued,
    running or succeeded, or whose store is complete."""
    out = BatchOutcome()
    for item in items:
        try:
            _submit_one(coord, base, item, out)
        except (SpecError, ValueError, OSError) as e:  # this video's own problem
            out.failed.append({"source": item.source or item.where, "error": one_line(str(e))})
        if on_item is not None:
            on_item(out)
    return out


def _submit_one(coord: Any, base: Mapping[str, Any], item: BatchItem, out: BatchOutcome) -> None:
    from flows.plan import plan_job
    from storage import InvalidValueError, JobNotFoundError, store_state

    if item.error is not None:
        raise SpecError(f"{item.where}: {item.error}")
    raw = _merged(base, item.overrides)
    raw["source"] = item.source
    named = raw.pop("job_id", None)
    try:
        spec = JobSpec.from_dict({**raw, "job_id": "x"})
        spec = JobSpec.from_dict({**raw, "job_id": named or job_id_for(spec)})
    except SpecError as e:
        raise SpecError(f"{item.where}: {e}") from e
    entry = {"job_id": spec.job_id, "source": spec.source}
    try:
        _existing(coord, spec.job_id, entry, out)
        return
    except JobNotFoundError:
        pass
    store = plan_job(spec).store_url
    state = store_state(store)
    if state is not None and state.status == "complete":
        out.skipped.append({**entry, "state": "succeeded"})
        return
    if state is not None:
        raise SpecError(f"{item.where}: a {state.status} store is at {store}; remove it first")
    meta = {"store": store, "submitted_by": "submit", "batch": True}
    try:
        coord.submit(spec.to_dict(), job_id=spec.job_id, meta=meta, priority=spec.priority)
    except InvalidValueError as e:  # the id is taken: another submitter of the same video?
        try:
            _existing(coord, spec.job_id, entry, out)
        except JobNotFoundError:
            raise SpecError(f"{item.where}: {e}") from e
        return
    out.queued.append(entry)


def _existing(coord: Any, job_id: str, entry: dict[str, str], out: BatchOutcome) -> None:
    """A video whose job exists: queued again if it failed or was cancelled, else skipped.

    Raises:
        JobNotFoundError: there is no such job (or its record expired).
    """
    from storage import InvalidTransitionError

    state = coord.get(job_id).state
    if state in ("failed", "cancelled"):
        try:
            coord.retry(job_id, by="submit")
            out.requeued.append({**entry, "state": state})
            return
        except InvalidTransitionError:  # queued again by another submitter just now
            state = coord.get(job_id).state
    out.skipped.append({**entry, "state": state})
