"""Analyzer: frames + boxes -> keypoints in frame pixels and composited frame maps."""

from __future__ import annotations

import pytest
import torch

from models import build_model
from models.analyze import Analyzer
from models.metadata import keypoint_set
from models.runtime import Predictor, RuntimeSpec

CROP = (128, 96)


@pytest.fixture(scope="module")
def groups() -> list[Predictor]:
    torch.manual_seed(0)
    spec = RuntimeSpec(batch_size=2)
    # Two groups, as with official checkpoints: pose on its own backbone, dense on another.
    return [
        Predictor(build_model(["pose"], "tiny", num_keypoints=17), spec),
        Predictor(build_model(["seg", "depth", "normal"], "tiny"), spec),
    ]


def test_two_frames_three_persons(groups: list[Predictor]) -> None:
    frames = torch.randint(0, 255, (2, 3, 90, 120), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10, 50, 80], [40, 5, 100, 85], [0, 0, 120, 90]])
    res = Analyzer(groups, crop_size=CROP)(
        frames, torch.tensor([0, 0, 1]), boxes, torch.tensor([0.9, 0.8, 0.7]), out_size=(45, 60)
    )
    assert res.keypoints.shape == (3, 17, 2) and res.keypoint_scores.shape == (3, 17)
    # decoded keypoints lie in each person's padded box
    assert (res.keypoints[0, :, 0] > 10 - 25).all() and (res.keypoints[0, :, 0] < 50 + 25).all()
    assert res.maps.person.shape == (2, 45, 60) and res.maps.normal.shape == (2, 45, 60, 3)
    assert int(res.maps.person[1].max()) <= 1 and int(res.maps.person[0].max()) <= 2


def test_flip_test_and_no_persons(groups: list[Predictor]) -> None:
    an = Analyzer(groups, crop_size=CROP, flip_indices=keypoint_set(17).flip_indices)
    frames = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    res = an(frames, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0))
    assert res.keypoints.shape == (0, 17, 2)
    assert (res.maps.person == 0).all() and torch.isnan(res.maps.depth).all()
    one = an(frames, torch.tensor([0]), torch.tensor([[5.0, 5, 40, 60]]), torch.tensor([1.0]))
    assert one.keypoints.shape == (1, 17, 2)


def test_a_task_in_two_groups_is_rejected(groups: list[Predictor]) -> None:
    with pytest.raises(ValueError, match="exactly one group"):
        Analyzer([groups[0], groups[0]])
