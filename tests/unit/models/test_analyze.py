"""Analyzer: frames + boxes -> keypoints in frame pixels and per-person dense patches."""

from __future__ import annotations

import copy

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
    assert res.maps is None and res.patches is not None
    assert res.patches.box.tolist() == [[10, 10, 51, 81], [40, 5, 101, 86], [0, 0, 120, 90]]
    assert [p.shape[-1] for p in res.patches.split("normal")] == [3, 3, 3]
    assert len(res.patches.split("depth")) == 3 and res.patches.depth_scale.shape == (3,)


def test_flip_test_and_no_persons(groups: list[Predictor]) -> None:
    an = Analyzer(groups, crop_size=CROP, flip_indices=keypoint_set(17).flip_indices)
    frames = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    res = an(frames, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0))
    assert res.keypoints.shape == (0, 17, 2)
    assert res.patches is not None and len(res.patches) == 0 and res.patches.part.size == 0
    one = an(frames, torch.tensor([0]), torch.tensor([[5.0, 5, 40, 60]]), torch.tensor([1.0]))
    assert one.keypoints.shape == (1, 17, 2)


def test_a_task_in_two_groups_is_rejected(groups: list[Predictor]) -> None:
    with pytest.raises(ValueError, match="exactly one group"):
        Analyzer([groups[0], groups[0]])


def test_bfloat16_outputs_are_decoded_close_to_float32() -> None:
    """Raw outputs stay bfloat16 until decoded (pose decoding, flip test and the per-person
    reduction convert what they read); results stay close to a float32 run of the same
    weights."""
    torch.manual_seed(1)
    models = [
        build_model(["pose"], "tiny", num_keypoints=17),
        build_model(["seg", "depth"], "tiny"),
    ]
    frames = torch.randint(0, 255, (1, 3, 90, 120), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 10, 60, 85], [50, 5, 110, 88]])
    flip = keypoint_set(17).flip_indices
    runs = {}
    for dtype in ("float32", "bfloat16"):
        groups = [
            Predictor(copy.deepcopy(m), RuntimeSpec(batch_size=2, dtype=dtype)) for m in models
        ]
        raw = groups[0](torch.randn(1, 3, *CROP))["pose"]
        assert raw.dtype == getattr(torch, dtype)
        runs[dtype] = Analyzer(groups, crop_size=CROP, flip_indices=flip)(
            frames, torch.tensor([0, 0]), boxes, torch.tensor([0.9, 0.8])
        )
    ref, low = runs["float32"], runs["bfloat16"]
    assert low.keypoints.dtype == torch.float32
    err = (low.keypoints - ref.keypoints).norm(dim=-1)  # px, in 60x80 boxes
    # random heads are nearly flat: a few argmaxes may jump, most keypoints stay put
    assert err.median() < 1.0 and (err < 3.0).float().mean() > 0.8
    assert ref.patches is not None and low.patches is not None
    d_ref = [p.astype("float32") for p in ref.patches.split("depth")]
    d_low = [p.astype("float32") for p in low.patches.split("depth")]
    scales = zip(ref.patches.depth_scale, low.patches.depth_scale, strict=True)
    for a, b, (s_a, s_b) in zip(d_ref, d_low, scales, strict=True):
        assert abs(a * s_a - b * s_b).max() < 0.05 * abs(a * s_a).max()
    parts = zip(ref.patches.split("part"), low.patches.split("part"), strict=True)
    agree = [(a == b).mean() for a, b in parts]
    assert min(agree) > 0.9
