"""Whole-frame dense mode: the demos' resize -> model -> resize back, plus box ownership."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import build_model
from models._frame_maps import whole_frame_maps
from models.analyze import Analyzer
from models.preprocess import normalize
from models.runtime import Predictor, RuntimeSpec

CROP = (128, 96)


def test_maps_follow_the_logits_and_the_highest_scoring_box() -> None:
    seg = torch.zeros(1, 28, 8, 8)
    seg[:, 0] = 1.0  # background everywhere ...
    seg[:, 5, :, :4] = 3.0  # ... but class 5 on the left half
    depth = torch.full((1, 1, 8, 8), 2.0)
    normal = torch.zeros(1, 3, 8, 8)
    normal[:, 2] = -4.0
    boxes = torch.tensor([[0.0, 0, 40, 80], [0, 0, 20, 80]])  # frame 80 x 80, second inside first
    maps = whole_frame_maps(
        {"seg": seg, "depth": depth, "normal": normal},
        boxes=boxes,
        scores=torch.tensor([0.5, 0.9]),
        frame_index=torch.tensor([0, 0]),
        n_frames=1,
        frame_size=(80, 80),
        out_size=(16, 16),
        tasks=("seg", "depth", "normal"),
    )
    fg = maps.part[0] > 0
    assert (maps.part[0, :, :8] == 5).all() and (maps.part[0, :, 8:] == 0).all()
    assert torch.equal(fg, ~torch.isnan(maps.depth[0]))
    assert torch.allclose(maps.depth[0][fg], torch.tensor(2.0))
    assert torch.allclose(maps.normal[0][fg], torch.tensor([0.0, 0, -1]), atol=1e-5)
    assert (maps.normal[0][~fg] == 0).all()
    assert (maps.person[0, :, :4] == 2).all()  # both boxes cover it: the 0.9 one wins
    assert (maps.person[0, :, 4:8] == 1).all() and (maps.person[0, :, 8:] == 0).all()


@pytest.fixture(scope="module")
def group() -> Predictor:
    torch.manual_seed(0)
    return Predictor(build_model(["pose", "seg", "depth"], "tiny", num_keypoints=17), RuntimeSpec())


def test_frame_mode_runs_dense_tasks_on_the_whole_frame(group: Predictor) -> None:
    frames = torch.randint(0, 255, (2, 3, 90, 120), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10, 50, 80], [0, 0, 120, 90]])
    args = (frames, torch.tensor([0, 1]), boxes, torch.tensor([0.9, 0.7]))
    frame = Analyzer([group], crop_size=CROP, dense_mode="frame")(*args, out_size=(45, 60))
    crop = Analyzer([group], crop_size=CROP)(*args, out_size=(45, 60))
    # Pose is the same in both modes: it always runs on the person crops.
    assert torch.allclose(frame.keypoints, crop.keypoints, atol=1e-3)
    assert torch.allclose(frame.keypoint_scores, crop.keypoint_scores, atol=1e-4)
    # Dense: the demos' recipe, written out independently.
    x = F.interpolate(frames.float(), size=CROP, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        raw = group(normalize(x))
    up = F.interpolate(raw["seg"], size=(45, 60), mode="bilinear", align_corners=False)
    part = up.argmax(1).to(torch.uint8)
    assert (frame.maps.part == part).float().mean() > 0.999
    fg = part > 0
    d = F.interpolate(raw["depth"], size=(45, 60), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(frame.maps.depth[fg], d[fg], atol=1e-4)
    assert torch.isnan(frame.maps.depth[~fg]).all()
    # Frame 1's box covers everything: every foreground pixel belongs to its only person.
    assert (frame.maps.person[1][fg[1]] == 1).all()


def test_an_unknown_mode_is_refused(group: Predictor) -> None:
    with pytest.raises(ValueError, match="dense_mode"):
        Analyzer([group], dense_mode="whole")
