"""WriterStage keeps a job's resume checkpoint with its store, never past the watermark."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.writer import StoreRequest, WriterStage
from storage import ResumeState, SchemaMismatchError, StorageError, StoreSpec, open_result
from storage.synthetic import synthetic_frame

SPEC = StoreSpec(height=32, width=32, source_height=32, source_width=32, tasks=("pose",))
MODELS = [{"name": "tiny", "task": "pose", "checkpoint_sha256": None, "random_weights": True}]


def _stage(url: str, resume: bool = False) -> WriterStage:
    request = StoreRequest(
        url=url, spec=SPEC, job={"job_id": "cp"}, source={}, models=MODELS, resume=resume
    )
    return WriterStage(request)


def test_checkpoints_are_saved_once_the_watermark_reaches_them(tmp_path: Path) -> None:
    url = str(tmp_path / "cp.zarr")
    stage = _stage(url)
    frames = [synthetic_frame(SPEC, i, n_persons=1) for i in range(20)]
    a, b, c = (_state(n, tag) for n, tag in ((5, "a"), (12, "b"), (20, "c")))
    assert stage.add(frames[:5], a) == 0  # block 0 not complete yet
    assert stage.checkpoint() is None
    assert stage.add(frames[5:12], b) == 8
    assert stage.checkpoint() == a  # 12 > watermark 8: b must wait
    assert stage.add(frames[12:20], c) == 16
    assert stage.checkpoint() == b
    assert open_result(url).attrs["checkpoint"] == b.to_dict()  # persisted with the store
    assert _stage(url, resume=True).checkpoint() == b  # and read back on resume
    with pytest.raises(StorageError, match="past the watermark"):
        stage.writer.save_checkpoint(_state(17, "d"))


def _state(frames: int, tag: str) -> ResumeState:
    return ResumeState(frames=frames, next_source_index=frames * 3, tracker={"tag": tag})


def test_a_malformed_saved_state_is_a_clear_error(tmp_path: Path) -> None:
    url = str(tmp_path / "bad.zarr")
    stage = _stage(url)
    stage.add([synthetic_frame(SPEC, i, n_persons=1) for i in range(8)], _state(8, "a"))
    stage.writer._meta["checkpoint"] = {"frames": "8", "next_source_index": 0, "tracker": {}}
    with pytest.raises(SchemaMismatchError, match="'frames' must be an int"):
        stage.checkpoint()
