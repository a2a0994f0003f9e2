"""Tests for models.postprocess: UDP decoding, flip test, seg labels, depth and normals."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from models._udp import cv2_gaussian_kernel
from models.postprocess import (
    flip_back_heatmaps,
    flip_test_average,
    heatmap_to_crop,
    normalize_normals,
    resize_depth,
    seg_labels,
    udp_decode,
)
from models.preprocess import points_crop_to_image

H_HM, W_HM = 64, 48


def _assert_close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Shape and value check via numpy (torch.testing's first call imports sympy: ~0.6 s)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(
        actual.double().numpy(), expected.double().numpy(), atol=atol, rtol=rtol
    )


def _gaussian_maps(centres: torch.Tensor, sigma: float, size: tuple[int, int]) -> torch.Tensor:
    """Unnormalised Gaussians (peak 1) at sub-pixel (x, y) centres (N, K, 2) -> (N, K, h, w)."""
    ys, xs = torch.meshgrid(
        torch.arange(size[0], dtype=torch.float64),
        torch.arange(size[1], dtype=torch.float64),
        indexing="ij",
    )
    dx = xs - centres[..., 0, None, None]
    dy = ys - centres[..., 1, None, None]
    return torch.exp(-(dx**2 + dy**2) / (2 * sigma**2)).float()


def _reference_decode(heatmaps: np.ndarray, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """Slow per-channel DARK-UDP decode written straight from the algorithm description."""
    n_inst, n_kp, _, w = heatmaps.shape
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    g = np.exp(-((np.arange(kernel) - (kernel - 1) / 2) ** 2) / (2 * sigma**2))
    kern2d = np.outer(g / g.sum(), g / g.sum())
    eps = np.finfo(np.float32).eps
    keypoints, scores = np.zeros((n_inst, n_kp, 2)), np.zeros((n_inst, n_kp))
    for n in range(n_inst):
        for c in range(n_kp):
            m = heatmaps[n, c].astype(np.float64)
            y, x = divmod(int(np.argmax(m)), w)
            scores[n, c] = m.max()
            if m.max() <= 0:
                keypoints[n, c] = -1
                continue
            windows = sliding_window_view(np.pad(m, kernel // 2), (kernel, kernel))
            blurred = np.einsum("ijkl,kl->ij", windows, kern2d)
            blurred *= m.max() / blurred.max()
            lg = np.pad(np.log(np.clip(blurred, 1e-3, 50)), 1, mode="edge")
            cy, cx = y + 1, x + 1
            dx = 0.5 * (lg[cy, cx + 1] - lg[cy, cx - 1])
            dy = 0.5 * (lg[cy + 1, cx] - lg[cy - 1, cx])
            dxx = lg[cy, cx + 1] - 2 * lg[cy, cx] + lg[cy, cx - 1]
            dyy = lg[cy + 1, cx] - 2 * lg[cy, cx] + lg[cy - 1, cx]
            dxy = 0.5 * (
                lg[cy + 1, cx + 1] - lg[cy, cx + 1] - lg[cy + 1, cx] + 2 * lg[cy, cx]
                - lg[cy, cx - 1] - lg[cy - 1, cx] + lg[cy - 1, cx - 1]
            )  # fmt: skip
            hessian = np.array([[dxx, dxy], [dxy, dyy]]) + eps * np.eye(2)
            keypoints[n, c] = np.array([x, y]) - np.linalg.inv(hessian) @ np.array([dx, dy])
    return keypoints, scores


# ----------------------------------------------------------------------------- udp_decode


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0, 3.0])
def test_udp_decode_recovers_subpixel_gaussian_centres(sigma: float) -> None:
    centres = torch.tensor(
        [
            [[20.3, 30.7], [14.5, 40.25], [33.9, 14.1]],
            [[24.0, 32.0], [17.22, 23.33], [30.6, 45.45]],
        ]
    )
    heatmaps = _gaussian_maps(centres, sigma, (H_HM, W_HM))
    keypoints, scores = udp_decode(heatmaps)
    assert keypoints.shape == (2, 3, 2)
    assert keypoints.dtype == torch.float32
    assert (keypoints - centres).abs().max() < 0.05
    _assert_close(scores, heatmaps.flatten(2).amax(-1))


def test_udp_decode_marks_non_positive_channels_invalid() -> None:
    heatmaps = _gaussian_maps(torch.tensor([[[20.3, 30.7]] * 3]), 2.0, (H_HM, W_HM))
    heatmaps[0, 1] = -torch.rand(H_HM, W_HM) - 0.1  # all negative
    heatmaps[0, 2] = 0.0  # max exactly 0
    keypoints, scores = udp_decode(heatmaps)
    assert keypoints[0, 1].tolist() == [-1.0, -1.0]
    assert keypoints[0, 2].tolist() == [-1.0, -1.0]
    assert scores[0, 1] == heatmaps[0, 1].max()
    assert scores[0, 2] == 0.0
    assert (keypoints[0, 0] - torch.tensor([20.3, 30.7])).abs().max() < 0.05


def test_udp_decode_matches_slow_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.rand(2, 4, 2, generator=gen) * torch.tensor([W_HM - 1.0, H_HM - 1.0])
    centres[0, 0] = torch.tensor([0.0, 10.0])  # peak on the left edge: exercises edge padding
    centres[1, 1] = torch.tensor([W_HM - 1.0, H_HM - 1.0])  # corner peak
    heatmaps = _gaussian_maps(centres, 2.0, (H_HM, W_HM))
    heatmaps += 0.02 * torch.randn(heatmaps.shape, generator=gen)
    heatmaps[1, 3] = -heatmaps[1, 3].abs() - 0.01
    keypoints, scores = udp_decode(heatmaps)
    ref_kp, ref_scores = _reference_decode(heatmaps.numpy(), 11)
    np.testing.assert_allclose(keypoints.numpy(), ref_kp, atol=1e-3)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-6)


def test_udp_decode_float64_and_empty_batch() -> None:
    heatmaps = _gaussian_maps(torch.tensor([[[20.3, 30.7]]]), 2.0, (H_HM, W_HM)).double()
    keypoints, scores = udp_decode(heatmaps)
    assert keypoints.dtype == scores.dtype == torch.float64
    keypoints, scores = udp_decode(torch.zeros(0, 5, H_HM, W_HM))
    assert keypoints.shape == (0, 5, 2)
    assert scores.shape == (0, 5)


def test_cv2_gaussian_kernel_follows_cv2_sigma_rule() -> None:
    kernel = cv2_gaussian_kernel(11, dtype=torch.float64)
    expected = torch.exp(-(torch.arange(-5.0, 6.0, dtype=torch.float64) ** 2) / (2 * 2.0**2))
    _assert_close(kernel, expected / expected.sum())
    assert cv2_gaussian_kernel(3).tolist() == [0.25, 0.5, 0.25]


@pytest.mark.parametrize(
    ("heatmaps", "kernel", "expectation"),
    [
        (torch.zeros(1, 2, 8, 8), 11, does_not_raise()),
        (
            torch.zeros(2, 8, 8),
            11,
            pytest.raises(ValueError, match=r"expected shape \(N, K, h, w\)"),
        ),
        (
            torch.zeros(1, 2, 8, 8, dtype=torch.int32),
            11,
            pytest.raises(ValueError, match="floating"),
        ),
        (torch.zeros(1, 2, 8, 8), 4, pytest.raises(ValueError, match="positive odd int, got 4")),
    ],
)
def test_udp_decode_validates_input(
    heatmaps: torch.Tensor, kernel: int, expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        udp_decode(heatmaps, blur_kernel=kernel)


def test_heatmap_to_crop_then_image_matches_official_back_projection() -> None:
    gen = torch.Generator().manual_seed(1)
    kp_hm = torch.rand(3, 5, 2, generator=gen) * torch.tensor([191.0, 255.0])
    center = torch.rand(3, 2, generator=gen) * 500
    scale = torch.rand(3, 2, generator=gen) * 300 + 50
    kp_crop = heatmap_to_crop(kp_hm, (256, 192))
    _assert_close(kp_crop, kp_hm * torch.tensor([767 / 191, 1023 / 255]))
    kp_img = points_crop_to_image(kp_crop, center, scale)
    official = kp_hm / torch.tensor([191.0, 255.0]) * scale[:, None] + center[:, None]
    official = official - 0.5 * scale[:, None]
    _assert_close(kp_img, official, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- flip test

FLIP_INDICES = torch.tensor([0, 2, 1, 4, 3])  # a made-up left/right involution, 0 self-symmetric


def test_flip_back_permutes_channels_and_mirrors_x() -> None:
    centres = torch.tensor([[[10.0, 5.0], [20.0, 9.0], [30.0, 13.0], [40.0, 17.0], [3.0, 21.0]]])
    heatmaps = _gaussian_maps(centres, 1.5, (32, 48))
    flipped_input = torch.empty_like(heatmaps)
    for k, j in enumerate(FLIP_INDICES.tolist()):  # what the net sees on the mirrored crop
        flipped_input[:, j] = heatmaps[:, k].flip(-1)
    back = flip_back_heatmaps(flipped_input, FLIP_INDICES)
    _assert_close(back, heatmaps)
    for k, j in enumerate(FLIP_INDICES.tolist()):
        _assert_close(back[:, k], flipped_input[:, j].flip(-1))
    keypoints, _ = udp_decode(back, blur_kernel=5)
    assert (keypoints - centres).abs().max() < 0.05
    _assert_close(flip_test_average(heatmaps, flipped_input, FLIP_INDICES), heatmaps)


@pytest.mark.parametrize(
    ("flip_indices", "expectation"),
    [
        (FLIP_INDICES, does_not_raise()),
        (torch.tensor([0, 2, 1, 4]), pytest.raises(ValueError, match=r"expected shape \(5,\)")),
        (FLIP_INDICES.float(), pytest.raises(ValueError, match="integer dtype")),
        (torch.tensor([0, 2, 1, 5, 3]), pytest.raises(ValueError, match=r"in \[0, 5\)")),
    ],
)
def test_flip_back_validates_indices(
    flip_indices: torch.Tensor, expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        flip_back_heatmaps(torch.zeros(2, 5, 4, 4), flip_indices)


def test_flip_test_average_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="heatmaps_of_flipped_input: expected shape"):
        flip_test_average(torch.zeros(2, 5, 4, 4), torch.zeros(1, 5, 4, 4), FLIP_INDICES)


# ----------------------------------------------------------------------------- dense heads


def test_seg_labels_upsamples_then_takes_argmax() -> None:
    logits = torch.zeros(2, 4, 6, 8)
    logits[:, 2] = 1.0  # class 2 everywhere ...
    logits[0, 3, :, 4:] = 5.0  # ... except the right half of image 0
    labels = seg_labels(logits, (12, 16))
    assert labels.shape == (2, 12, 16)
    assert labels.dtype == torch.int64
    assert (labels[0, :, :7] == 2).all()
    assert (labels[0, :, 9:] == 3).all()
    assert (labels[1] == 2).all()


def test_seg_labels_single_channel_uses_sigmoid_threshold() -> None:
    logits = torch.full((1, 1, 4, 4), -1.0)  # sigmoid 0.27 -> background
    logits[..., :2] = -0.5  # sigmoid 0.38 -> foreground
    labels = seg_labels(logits, (4, 4))
    assert labels.dtype == torch.int64
    assert labels[0, :, :2].eq(1).all()
    assert labels[0, :, 2:].eq(0).all()


def test_resize_depth_shape_and_values() -> None:
    depth = torch.full((2, 1, 8, 6), 0.25, dtype=torch.bfloat16)
    out = resize_depth(depth, (16, 12))
    assert out.shape == (2, 16, 12)
    assert out.dtype == torch.float32
    _assert_close(out, torch.full((2, 16, 12), 0.25))


@pytest.mark.parametrize("size", [None, (10, 14)])
def test_normalize_normals_gives_unit_vectors(size: tuple[int, int] | None) -> None:
    normals = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(2)) * 3
    out = normalize_normals(normals, size)
    assert out.shape == (2, 3, *(size or (5, 7)))
    _assert_close(out.norm(dim=1), torch.ones(2, *out.shape[2:]), atol=1e-4, rtol=0)
    assert torch.isfinite(normalize_normals(torch.zeros(1, 3, 2, 2))).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: seg_labels(torch.zeros(4, 6, 8), (12, 16)), r"logits: expected shape \(N, C"),
        (lambda: seg_labels(torch.zeros(1, 4, 6, 8, dtype=torch.long), (2, 2)), "floating"),
        (lambda: seg_labels(torch.zeros(1, 4, 6, 8), (0, 16)), r"size: expected a \(height"),
        (lambda: resize_depth(torch.zeros(1, 2, 6, 8), (12, 16)), r"expected shape \(N, 1, h"),
        (lambda: normalize_normals(torch.zeros(1, 4, 6, 8)), r"expected shape \(N, 3, h"),
        (lambda: heatmap_to_crop(torch.zeros(1, 2, 3), (64, 48)), r"expected shape \(N, K, 2\)"),
        (lambda: heatmap_to_crop(torch.zeros(1, 2, 2), (1, 48)), r"heatmap_size: expected"),
    ],
)
def test_dense_post_processing_validates_input(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_flip_test_with_the_goliath_swap_map() -> None:
    """A peak for keypoint k seen in the flipped input comes back mirrored, in channel flip[k]."""
    from models.metadata import keypoint_set

    kset = keypoint_set(308)
    flip = torch.tensor(kset.flip_indices)
    h, w = 16, 12
    hm_flipped_input = torch.zeros(1, 308, h, w)
    left_wrist, right_wrist = kset.index("left_wrist"), kset.index("right_wrist")
    hm_flipped_input[0, right_wrist, 5, 2] = 1.0  # the mirror image shows a right wrist at x=2
    back = flip_back_heatmaps(hm_flipped_input, flip)
    assert back[0, left_wrist, 5, w - 1 - 2] == 1.0
    assert back[0, right_wrist].abs().sum() == 0
