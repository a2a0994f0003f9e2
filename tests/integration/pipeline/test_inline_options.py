"""Job options through the whole pipeline in one process (``flows.inline.run_inline``, no Ray):
decode a small synthetic clip, detect, track, analyse with the tiny model, write a real store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from actors.groups import TINY_CROP, ModelSpec, build_groups
from flows.inline import run_inline
from flows.plan import plan_job
from flows.spec import JobSpec
from media import read_frames
from models.analyze import Analyzer
from models.metadata import keypoint_set
from storage import ResultReader, open_result
from tests.inputs.boxclip import write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 320 x 240 frames (a white box walking on a dark background)."""
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", width=320, height=240, n=2)


def _run(clip: Path, root: Path, job_id: str, **extra: Any) -> ResultReader:
    raw = {
        "source": str(clip),
        "job_id": job_id,
        "output_root": str(root),
        "tasks": ["pose"],
        "batch_size": 2,
        **extra,
    }
    outcome = run_inline(plan_job(JobSpec.from_dict(raw)))
    assert outcome.state == "succeeded"
    return open_result(outcome.store_url)


def test_flip_test_from_the_job_spec_equals_the_analyzer_with_flip_indices(
    clip: Path, tmp_path: Path
) -> None:
    plain = _run(clip, tmp_path, "plain").persons(0, 2)
    flipped = _run(clip, tmp_path, "flip", model={"flip_test": True}).persons(0, 2)
    assert plain.keypoints_xy is not None and flipped.keypoints_xy is not None
    assert np.abs(plain.keypoints_xy - flipped.keypoints_xy).max() > 1.0

    frames = torch.from_numpy(np.stack([rgb for _, rgb in read_frames(clip)])).permute(0, 3, 1, 2)
    analyzer = Analyzer(
        build_groups(ModelSpec(), ("pose",), 2),
        flip_indices=keypoint_set(308).flip_indices,
        crop_size=TINY_CROP,
    )
    boxes = torch.tensor([[0.0, 0.0, 320.0, 240.0]] * 2)
    want = analyzer(frames, torch.arange(2), boxes, torch.ones(2), tasks=("pose",))
    assert want.keypoints is not None
    # the store keeps keypoints on a 1/64 px grid (storage/_encode.py)
    np.testing.assert_allclose(flipped.keypoints_xy, want.keypoints.numpy(), atol=1 / 128 + 1e-4)


def _pose_file(directory: Path, name: str, num_keypoints: int) -> None:
    """A released-format pose ``.pth`` (state_dict + meta) of the tiny official model."""
    from tests.unit.models.official_reference import OfficialModel

    state = OfficialModel("pose", num_keypoints=num_keypoints).state_dict()
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, directory / name)


WHOLEBODY_03B = "sapiens_0.3b_coco_wholebody_best_coco_wholebody_AP_620.pth"


def test_a_released_model_asked_for_133_keypoints_loads_the_133_file(
    clip: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    _pose_file(weights, WHOLEBODY_03B, 133)
    model = {"size": "0.3b", "num_keypoints": 133, "weights": str(weights)}
    store = _run(clip, tmp_path, "wb", model=model, sampling={"stride": 2})
    assert store.spec.num_keypoints == 133
    persons = store.persons(0)
    assert persons.keypoints_xy is not None and persons.keypoints_xy.shape == (1, 133, 2)
    assert store.attrs["job"]["labels"]["keypoints"][:2] == ["nose", "left_eye"]
    assert WHOLEBODY_03B in str(store.models[0].source)


def test_a_file_of_another_keypoint_set_fails_the_job_clearly(tmp_path: Path) -> None:
    """A 308-keypoint head under the 133-keypoint file's name: refused, never a 308 store."""
    from actors.groups import build_groups
    from models.errors import CheckpointError

    _pose_file(tmp_path, WHOLEBODY_03B, 308)
    key = ModelSpec(size="0.3b", num_keypoints=133, weights=str(tmp_path))
    with pytest.raises(CheckpointError, match="expected a 133-keypoint pose head, got 308"):
        build_groups(key, ("pose",), 1)


def test_untracked_detections_reach_the_store_with_their_score(clip: Path, tmp_path: Path) -> None:
    """Given boxes with scores: the weak ones (0.45, 0.58) match no track and are too weak to
    start one; they are stored with their score and track id -1, and are no track."""
    boxes = {
        "0": [[20, 20, 100, 200, 0.9], [200, 30, 300, 200, 0.45]],
        "1": [[24, 20, 104, 200, 0.9], [150, 10, 190, 100, 0.58]],
    }
    store = _run(clip, tmp_path, "weak", detector="boxes", boxes=boxes)
    persons = store.persons(0, 2)
    assert persons.frame.tolist() == [0, 0, 1, 1]
    assert persons.track_id.tolist() == [1, -1, 1, -1]
    np.testing.assert_allclose(persons.score, [0.9, 0.45, 0.9, 0.58], atol=1e-6)
    np.testing.assert_allclose(persons.box_xyxy[3], [150, 10, 190, 100])
    assert persons.keypoints_xy is not None and persons.keypoints_xy.shape == (4, 308, 2)
    assert store.track_ids().tolist() == [1]
    assert store.summary().tracks == 1
    assert store.track(1).frames.tolist() == [0, 1]
