"""Compositing person crops into frame maps: who owns a pixel, and what it carries."""

from __future__ import annotations

import torch

from models._persons import composite_persons
from models.preprocess import crop_persons

CROP = (64, 48)


def _crop(boxes: list[list[float]], frame_index: list[int], hw: tuple[int, int] = (60, 80)):
    frames = torch.zeros(max(frame_index) + 1, 3, *hw)
    return crop_persons(frames, torch.tensor(frame_index), torch.tensor(boxes), out_size=CROP)


def _seg(n: int, label: int, fg_logit: float) -> torch.Tensor:
    """Logits that make ``label`` win with background probability set by ``fg_logit``."""
    logits = torch.full((n, 28, 32, 24), -10.0)
    logits[:, 0] = 0.0
    logits[:, label] = fg_logit
    return logits


def test_one_person_owns_its_crop_and_carries_depth_and_normals() -> None:
    crop = _crop([[20.0, 10.0, 50.0, 50.0]], [0])
    depth = torch.full((1, 1, 64, 48), 3.0)
    normal = torch.zeros(1, 3, 32, 24)
    normal[:, 2] = -2.0
    maps = composite_persons(
        {"seg": _seg(1, 5, 4.0), "depth": depth, "normal": normal},
        matrix=crop.matrix,
        frame_index=torch.tensor([0]),
        scores=torch.tensor([0.9]),
        boxes=torch.tensor([[20.0, 10, 50, 50]]),
        n_frames=1,
        frame_size=(60, 80),
        crop_size=CROP,
    )
    on = maps.person[0] == 1
    assert on[30, 35] and not on[0, 0] and not on[59, 79]
    assert (maps.part[0][on] == 5).all() and (maps.part[0][~on] == 0).all()
    assert torch.allclose(maps.depth[0][on], torch.tensor(3.0))
    assert torch.isnan(maps.depth[0][~on]).all()
    assert torch.allclose(maps.normal[0][on], torch.tensor([0.0, 0.0, -1.0]), atol=1e-4)
    assert (maps.normal[0][~on] == 0).all()


def test_overlap_goes_to_the_more_confident_person() -> None:
    boxes = [[10.0, 10.0, 45.0, 50.0], [30.0, 10.0, 65.0, 50.0]]
    crop = _crop(boxes, [0, 0])
    seg = torch.cat((_seg(1, 21, 1.0), _seg(1, 22, 4.0)))  # second is far more confident
    maps = composite_persons(
        {"seg": seg},
        matrix=crop.matrix,
        frame_index=torch.tensor([0, 0]),
        scores=torch.tensor([0.99, 0.5]),
        boxes=torch.tensor(boxes),
        n_frames=1,
        frame_size=(60, 80),
        crop_size=CROP,
    )
    assert maps.person[0, 30, 38] == 2 and maps.part[0, 30, 38] == 22  # overlap
    assert maps.person[0, 30, 15] == 1 and maps.part[0, 30, 15] == 21  # only the first
    assert maps.depth is None and maps.normal is None


def test_without_seg_boxes_decide_and_frames_stay_apart() -> None:
    boxes = [[10.0, 10.0, 45.0, 50.0], [30.0, 10.0, 65.0, 50.0], [0.0, 0.0, 20.0, 20.0]]
    crop = _crop(boxes, [0, 0, 1])
    maps = composite_persons(
        {"depth": torch.ones(3, 1, 64, 48)},
        matrix=crop.matrix,
        frame_index=torch.tensor([0, 0, 1]),
        scores=torch.tensor([0.4, 0.8, 0.7]),
        boxes=torch.tensor(boxes),
        n_frames=2,
        frame_size=(60, 80),
        out_size=(30, 40),
        crop_size=CROP,
    )
    assert maps.person.shape == (2, 30, 40) and maps.part is None
    assert maps.person[0, 15, 19] == 2  # overlap (frame x ~ 38.5): the higher score wins
    assert maps.person[0, 15, 7] == 1
    assert maps.person[1, 5, 5] == 1 and maps.person[1, 25, 35] == 0  # slots count per frame
    assert torch.isnan(maps.depth[1, 25, 35]) and maps.depth[1, 5, 5] == 1.0
