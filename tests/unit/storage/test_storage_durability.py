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
