"""WriterStage keeps a job's resume checkpoint with its store, never past the watermark."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.writer import WriterStage
from storage import StorageError, StoreSpec, open_result
from storage.synthetic import synthetic_frame

SPEC = StoreSpec(height=32, width=32, source_height=32, source_width=32, tasks=("pose",))
MODELS = [{"name": "tiny", "task": "pose", "checkpoint_sha256": None, "random_weights": True}]


def _stage(url: str, resume: bool = False) -> WriterStage:
    return WriterStage(
        url, SPEC.to_dict(), job={"job_id": "cp"}, source={}, models=MODELS, resume=resume
    )


def test_checkpoints_are_saved_once_the_watermark_reaches_them(tmp_path: Path) -> None:
    url = str(tmp_path / "cp.zarr")
    stage = _stage(url)
    frames = [synthetic_frame(SPEC, i, n_persons=1) for i in range(20)]
    assert stage.add(frames[:5], {"frames": 5, "tag": "a"}) == 0  # block 0 not complete yet
    assert stage.checkpoint() is None
    assert stage.add(frames[5:12], {"frames": 12, "tag": "b"}) == 8
    assert stage.checkpoint()["tag"] == "a"  # 12 > watermark 8: b must wait
    assert stage.add(frames[12:20], {"frames": 20, "tag": "c"}) == 16
    assert stage.checkpoint()["tag"] == "b"
    assert open_result(url).attrs["checkpoint"]["tag"] == "b"  # persisted with the store
    assert _stage(url, resume=True).checkpoint()["tag"] == "b"  # and read back on resume
    with pytest.raises(StorageError, match="past the watermark"):
        stage.writer.save_checkpoint({"frames": 17})
