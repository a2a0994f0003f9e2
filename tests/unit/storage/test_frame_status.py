"""``frames/status``: what became of each selected frame (ok, corrupt, skipped) is stored and
read back; a store written before the array existed reads as all ok and can be resumed."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from storage import SchemaMismatchError, StoreSpec, Writer, open_result
from storage.synthetic import synthetic_frame

SPEC = StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=4)


def _unanalysed(index: int, status: str, time_s: float) -> object:
    frame = synthetic_frame(SPEC, index, n_persons=0)
    return dataclasses.replace(frame, status=status, time_s=time_s)


def test_statuses_round_trip(tmp_path: Path) -> None:
    w = Writer.create(tmp_path / "s.zarr", SPEC, job={"job_id": "s"})
    w.add(synthetic_frame(SPEC, 0))
    w.add(_unanalysed(1, "corrupt", math.nan))  # a lost frame: no time known
    w.add(_unanalysed(2, "skipped", 0.08))
    for i in range(3, 6):
        w.add(synthetic_frame(SPEC, i))
    w.finalize()
    r = open_result(tmp_path / "s.zarr")
    table = r.read_frames()
    assert table.statuses() == ["ok", "corrupt", "skipped", "ok", "ok", "ok"]
    assert table.status.tolist() == [1, 2, 3, 1, 1, 1]  # docs/schema.md's codes
    assert table.ok.tolist() == [True, False, False, True, True, True]
    assert r.frame(1).status == "corrupt" and math.isnan(r.frame(1).time_s)
    assert r.frame(2).status == "skipped" and len(r.frame(2).persons) == 0
    assert r.frame(0).status == "ok"


def test_an_unanalysed_frame_has_no_persons_and_only_it_may_lack_a_time() -> None:
    frame = synthetic_frame(SPEC, 0, n_persons=2)
    with pytest.raises(SchemaMismatchError, match="has no persons"):
        dataclasses.replace(frame, status="corrupt")
    with pytest.raises(SchemaMismatchError, match="finite"):
        dataclasses.replace(synthetic_frame(SPEC, 0, n_persons=0), time_s=math.nan)
    with pytest.raises(SchemaMismatchError, match="status"):
        dataclasses.replace(synthetic_frame(SPEC, 0, n_persons=0), status="lost")


def test_a_store_without_the_status_array_reads_as_ok_and_resumes(tmp_path: Path) -> None:
    """Stand-in for a store an older writer made: the same writer's store with the array's
    directory removed (the older layout is this one without ``frames/status``)."""
    path = tmp_path / "old.zarr"
    w = Writer.create(path, SPEC, job={"job_id": "old"})
    for i in range(4):
        w.add(synthetic_frame(SPEC, i))
    del w
    shutil.rmtree(path / "frames" / "status")
    resumed = Writer.resume(path)
    for i in range(4, 10):
        resumed.add(synthetic_frame(SPEC, i))
    resumed.finalize()
    r = open_result(path)
    assert r.num_frames == 10
    assert r.read_frames().statuses() == ["ok"] * 10
    assert not (path / "frames" / "status").exists()
    np.testing.assert_array_equal(r.read_frames().source_index, np.arange(10))
