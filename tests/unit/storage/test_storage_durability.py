"""Local stores: a block's files are on disk before the watermark that covers them is written.

``os.fsync`` and the renames are wrapped to record, in order, which file or directory was
fsynced and when the root ``zarr.json`` was replaced by one with a new watermark.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from storage import StoreSpec, Writer
from storage.synthetic import synthetic_frame

SPEC = StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=4)
_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$|\.partial$")


def _watermark(path: Path) -> int | None:
    try:
        return int(
            json.loads(path.read_bytes())["attributes"]["sapiens_stream"]["committed_frames"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Recorder:
    """Events under ``root``: ``("fsync", path)`` (a temporary file counts as its target),
    ``("fsync-meta", watermark)`` for the root metadata and ``("publish", watermark)`` when a
    root metadata file with that watermark was renamed into place."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.events: list[tuple[str, Any]] = []
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

        def fsync(fd: int) -> None:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if target.is_relative_to(root):
                path = Path(_TEMP.sub("", str(target)))
                self.events.append(("fsync", path))
                if path == root / "zarr.json":
                    self.events.append(("fsync-meta", _watermark(target)))
            real_fsync(fd)

        def move(real: Any) -> Any:
            def wrapped(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                watermark = _watermark(Path(src)) if Path(dst) == root / "zarr.json" else None
                real(src, dst, *args, **kwargs)
                if watermark is not None:
                    self.events.append(("publish", watermark))

            return wrapped

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", move(real_replace))
        monkeypatch.setattr(os, "rename", move(real_rename))

    def first(self, event: tuple[str, Any]) -> int:
        assert event in self.events, f"{event} never happened: {self.events}"
        return self.events.index(event)


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_block_files_are_fsynced_before_the_watermark_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "job.zarr"
    w = Writer.create(root, SPEC, job={"job_id": "d"}, capacity_frames=4)
    for i in range(4):
        w.add(synthetic_frame(SPEC, i, n_persons=2))
    before = _files(root)
    rec = Recorder(root, monkeypatch)
    for i in range(4, 8):  # block 1: the arrays grow, then the block is written
        w.add(synthetic_frame(SPEC, i, n_persons=2))
    assert w.watermark == 8
    after = _files(root)
    written = [p for p in after if p != root / "zarr.json" and before.get(p) != after[p]]
    assert len(written) > len(SPEC.tasks)  # chunk files of every array, and array metadata
    assert any(p.name == "zarr.json" for p in written)  # the grown arrays' metadata
    published = rec.first(("publish", 8))
    for path in written:
        assert rec.first(("fsync", path)) < published, path
        assert rec.first(("fsync", path.parent)) < published, path.parent
    new_dirs = {p.parent for p in written} - {p.parent for p in before}
    for d in new_dirs:  # a new directory's entry in its parent is durable too
        assert rec.first(("fsync", d.parent)) < published, d
    # ... and the new watermark itself is fsynced: its data, then its directory entry.
    assert rec.first(("fsync-meta", 8)) < published
    assert ("fsync", root) in rec.events[published:]


def _status(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_bytes())["attributes"]["sapiens_stream"]["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_new_store_is_on_disk_before_it_says_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arrays of a store being created are fsynced together (not one write at a time), but
    all of them, files and directories, before the root says "running"; the root's "creating"
    itself is durable first (a crash in between leaves a store that is replaced)."""
    root = tmp_path / "job.zarr"
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if target.is_relative_to(tmp_path):
            events.append(("fsync", Path(_TEMP.sub("", str(target)))))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        status = _status(Path(src)) if Path(dst) == root / "zarr.json" else None
        real_replace(src, dst, *args, **kwargs)
        if status is not None:
            events.append(("publish", status))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    Writer.create(root, SPEC, job={"job_id": "d"}, capacity_frames=4)
    running = events.index(("publish", "running"))
    files = [p for p in root.rglob("*") if p.is_file() and p != root / "zarr.json"]
    assert len(files) >= 2 * len(SPEC.tasks)  # array and group metadata of every task
    synced = [path for kind, path in events[:running] if kind == "fsync"]
    for path in files:
        assert path in synced, path
        assert path.parent in synced, path.parent
    assert tmp_path in synced  # the store's own directory entry
    # Each array file once: the writes were not fsynced one by one and then again.
    assert all(synced.count(path) == 1 for path in files)


def test_an_existing_key_is_not_rewritten_by_set_if_not_exists(tmp_path: Path) -> None:
    """zarr asks ``set_if_not_exists`` for every parent group of every array: a key that is
    there keeps its bytes and no temporary file is written for it."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    from storage._store import open_store

    store = open_store(tmp_path / "s.zarr", read_only=False, must_exist=False)
    buf = default_buffer_prototype().buffer
    asyncio.run(store.set_if_not_exists("a/zarr.json", buf.from_bytes(b"first")))
    made: list[str] = []
    real_open = open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(str(file))
        return real_open(file, *args, **kwargs)

    import builtins

    builtins.open = spy  # type: ignore[assignment]
    try:
        asyncio.run(store.set_if_not_exists("a/zarr.json", buf.from_bytes(b"second")))
        asyncio.run(store.set_if_not_exists("b/zarr.json", buf.from_bytes(b"new")))
    finally:
        builtins.open = real_open  # type: ignore[assignment]
    assert (tmp_path / "s.zarr" / "a" / "zarr.json").read_bytes() == b"first"
    assert (tmp_path / "s.zarr" / "b" / "zarr.json").read_bytes() == b"new"
    assert not any("/a/zarr.json" in m for m in made)  # nothing written for the existing key
    assert any("/b/zarr.json" in m for m in made)
