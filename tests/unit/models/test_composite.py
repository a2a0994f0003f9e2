"""Dense crop outputs land on the frame pixels the crop saw."""

from __future__ import annotations

import torch

from models.composite import crop_maps_to_frame, frame_to_map_matrix
from models.preprocess import crop_persons, points_image_to_crop


def test_frame_to_map_matrix_matches_align_corners_false_resize() -> None:
    frame = torch.zeros(1, 3, 100, 200)
    crop = crop_persons(frame, torch.tensor([0]), torch.tensor([[50.0, 10.0, 90.0, 90.0]]))
    m = frame_to_map_matrix(crop.matrix, (128, 96))
    pts = torch.tensor([[[70.0, 50.0], [55.0, 20.0]]])
    in_crop = points_image_to_crop(pts, crop.matrix)
    in_map = points_image_to_crop(pts, m)
    expected = (in_crop + 0.5) * torch.tensor([96 / 768, 128 / 1024]) - 0.5
    assert torch.allclose(in_map, expected, atol=1e-4)


def test_a_crop_of_a_ramp_pastes_back_onto_the_same_ramp() -> None:
    h, w = 120, 160
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    ramp = torch.stack((xs, ys, xs + ys))[None]  # (1, 3, H, W)
    boxes = torch.tensor([[40.0, 20.0, 100.0, 110.0]])
    crop = crop_persons(ramp, torch.tensor([0]), boxes, out_size=(256, 192))
    small = torch.nn.functional.interpolate(
        crop.crops, size=(64, 48), mode="bilinear", align_corners=False
    )
    back, covered = crop_maps_to_frame(small, crop.matrix, (h, w), crop_size=(256, 192))
    inner = covered[0, 0].clone()
    inner[:, :45] = False  # stay away from the crop border where bilinear reads zeros
    inner[:, 95:] = False
    inner[:25] = False
    inner[105:] = False
    assert inner.sum() > 1000
    err = (back[0, :, inner] - ramp[0, :, inner]).abs().max()
    assert err < 0.6  # a linear ramp survives two bilinear resamplings
    assert not covered[0, 0, 0, 0]  # the frame corner is outside the padded box
