"""Tests for models.preprocess: normalisation, whole-image resize and UDP person crops."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest
import torch

from models.preprocess import (
    CONFIG_NORM,
    INPUT_SIZE,
    LITE_NORM,
    CropResult,
    Normalization,
    boxes_to_center_scale,
    crop_persons,
    invert_affine,
    normalize,
    points_crop_to_image,
    points_image_to_crop,
    resize_whole,
    udp_warp_matrix,
)

OUT = (32, 24)  # small crop size (H, W) with the 3:4 aspect of INPUT_SIZE, keeps tests fast


def _assert_close(
    actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Shape and value check via numpy (torch.testing's first call imports sympy: ~0.6 s)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(
        actual.double().numpy(), expected.double().numpy(), atol=atol, rtol=rtol
    )


def _bilinear_zero_border(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """cv2-style bilinear sample of (C, H, W) at pixel (x, y); neighbours outside read as 0."""
    _, h, w = image.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    total = torch.zeros(image.shape[0], dtype=torch.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * image[:, yy, xx].double()
    return total


def _cubic_weight(t: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with cv2's a = -0.75."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _bicubic_zero_border(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """cv2-style bicubic sample of (C, H, W) at pixel (x, y) over the 4x4 neighbours; those
    outside read as 0."""
    _, h, w = image.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    total = torch.zeros(image.shape[0], dtype=torch.float64)
    for dy in range(-1, 3):
        for dx in range(-1, 3):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < h and 0 <= xx < w:
                weight = _cubic_weight(y - yy) * _cubic_weight(x - xx)
                total += weight * image[:, yy, xx].double()
    return total


# ----------------------------------------------------------------------------- normalize / resize


@pytest.mark.parametrize("norm", [CONFIG_NORM, LITE_NORM])
def test_normalize_maps_mean_to_zero_and_mean_plus_std_to_one(norm: Normalization) -> None:
    images = torch.tensor(norm.mean).view(1, 3, 1, 1).expand(2, 3, 4, 5).clone()
    images[:, :, 0, 0] += torch.tensor(norm.std)
    out = normalize(images, norm)
    assert out.dtype == torch.float32
    assert out[:, :, 0, 0].sub(1).abs().max() < 1e-5
    assert out[:, :, 1:].abs().max() < 1e-5


def test_normalize_uint8_and_output_dtype() -> None:
    images = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    out = normalize(images, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    expected = (200 - torch.tensor(CONFIG_NORM.mean)) / torch.tensor(CONFIG_NORM.std)
    _assert_close(out[0, :, 0, 0].float(), expected, atol=1e-2)


@pytest.mark.parametrize(
    ("images", "dtype", "expectation"),
    [
        (torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.float16, does_not_raise()),
        (torch.zeros(3, 2, 2), torch.float32, pytest.raises(ValueError, match=r"\(B, 3, H, W\)")),
        (torch.zeros(1, 4, 2, 2), torch.float32, pytest.raises(ValueError, match="got \\(1, 4")),
        (
            torch.zeros(1, 3, 2, 2, dtype=torch.int32),
            torch.float32,
            pytest.raises(ValueError, match="expected dtype uint8 or a floating-point dtype"),
        ),
        (torch.zeros(1, 3, 2, 2), torch.int64, pytest.raises(ValueError, match="dtype: expected")),
    ],
)
def test_normalize_validates_input(
    images: torch.Tensor, dtype: torch.dtype, expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        normalize(images, dtype=dtype)


def test_normalization_rejects_bad_constants() -> None:
    with pytest.raises(ValueError, match="expected 3 values"):
        Normalization(mean=(1.0, 2.0), std=(1.0, 1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected positive"):
        Normalization(mean=(1.0, 2.0, 3.0), std=(1.0, 0.0, 1.0))


def test_resize_whole_upscale_uses_half_pixel_centres() -> None:
    image = torch.tensor([[0.0, 4.0], [8.0, 12.0]]).view(1, 1, 2, 2)
    out = resize_whole(image, (4, 4))
    # half-pixel centres: source coords (-0.25, 0.25, 0.75, 1.25) clamp to (0, .25, .75, 1)
    t = torch.tensor([0.0, 0.25, 0.75, 1.0])
    _assert_close(out[0, 0], 8 * t[:, None] + 4 * t[None, :])


def test_resize_whole_downscale_has_no_antialias() -> None:
    row = torch.tensor([0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    image = row.expand(3, 8).reshape(1, 1, 3, 8)
    out = resize_whole(image.to(torch.uint8), (3, 2))
    assert out.dtype == torch.float32
    _assert_close(out[0, 0, 1], torch.tensor([5.0, 0.0]))  # samples at x = 1.5 and 5.5


def test_resize_whole_default_size_keeps_float_dtype() -> None:
    out = resize_whole(torch.zeros(1, 3, 60, 40, dtype=torch.float16))
    assert out.shape == (1, 3, *INPUT_SIZE)
    assert out.dtype == torch.float16


# ----------------------------------------------------------------------------- boxes and matrices


@pytest.mark.parametrize(
    ("box", "center", "scale"),
    [
        ((0.0, 0.0, 200.0, 100.0), (100.0, 50.0), (250.0, 250.0 / 0.75)),  # wide: grow h
        ((10.0, 20.0, 50.0, 220.0), (30.0, 120.0), (187.5, 250.0)),  # tall: grow w
        ((0.0, 0.0, 75.0, 100.0), (37.5, 50.0), (93.75, 125.0)),  # already 3:4
    ],
)
def test_boxes_to_center_scale_hand_computed(
    box: tuple[float, ...], center: tuple[float, float], scale: tuple[float, float]
) -> None:
    c, s = boxes_to_center_scale(torch.tensor([box]))
    _assert_close(c[0], torch.tensor(center))
    _assert_close(s[0], torch.tensor(scale))


def test_udp_warp_matrix_maps_box_edges_to_crop_pixel_centres() -> None:
    center, scale = torch.tensor([[100.0, 50.0]]), torch.tensor([[60.0, 80.0]])
    matrix = udp_warp_matrix(center, scale, OUT)
    expected = torch.tensor([[23 / 60, 0.0, 23 / 60 * -70.0], [0.0, 31 / 80, 31 / 80 * -10.0]])
    _assert_close(matrix[0], expected)
    corners = torch.tensor([[[70.0, 10.0], [130.0, 90.0], [100.0, 50.0]]])
    mapped = points_image_to_crop(corners, matrix)
    _assert_close(mapped, torch.tensor([[[0.0, 0.0], [23.0, 31.0], [11.5, 15.5]]]), atol=1e-4)


def test_invert_affine_composes_to_identity() -> None:
    gen = torch.Generator().manual_seed(3)
    matrix = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64) + torch.eye(2, 3)
    inverse = invert_affine(matrix)
    points = torch.randn(4, 6, 2, generator=gen, dtype=torch.float64)
    _assert_close(points_image_to_crop(points_image_to_crop(points, matrix), inverse), points)


@pytest.mark.parametrize("out_size", [OUT, INPUT_SIZE])
def test_crop_inverse_round_trip_below_0_01_px(out_size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(4)
    frame_h, frame_w = 720.0, 1280.0
    xy1 = torch.rand(16, 2, generator=gen) * torch.tensor([frame_w, frame_h]) - 100  # some outside
    wh = torch.rand(16, 2, generator=gen) * torch.tensor([500.0, 300.0]) + 5  # wide and tall
    center, scale = boxes_to_center_scale(torch.cat((xy1, xy1 + wh), dim=1))
    matrix = udp_warp_matrix(center, scale, out_size)
    points = torch.rand(16, 9, 2, generator=gen) * torch.tensor([frame_w, frame_h])
    in_crop = points_image_to_crop(points, matrix)
    back = points_crop_to_image(in_crop, center, scale, in_size=out_size)
    assert (back - points).abs().max() < 0.01
    via_inverse = points_image_to_crop(in_crop, invert_affine(matrix))
    assert (via_inverse - points).abs().max() < 0.01


# ----------------------------------------------------------------------------- crop_persons


def test_crop_pixels_equal_hand_computed_bilinear_samples() -> None:
    gen = torch.Generator().manual_seed(5)
    frames = torch.rand(1, 3, 40, 50, generator=gen) * 255
    boxes = torch.tensor([[5.3, 4.1, 30.7, 35.2], [-10.0, 20.0, 25.0, 50.0]])  # 2nd leaves frame
    result = crop_persons(frames, torch.tensor([0, 0]), boxes, OUT)
    inverse = invert_affine(result.matrix.double())
    for n in range(2):
        for u, v in ((0, 0), (7, 3), (23, 31), (12, 20), (5, 29)):
            x, y = inverse[n, :, :2] @ torch.tensor([u, v], dtype=torch.float64) + inverse[n, :, 2]
            expected = _bilinear_zero_border(frames[0], float(x), float(y))
            _assert_close(result.crops[n, :, v, u], expected, atol=1e-3, rtol=0)


def test_bicubic_mode_samples_enlarging_crops_bicubically_and_shrinking_ones_bilinearly() -> None:
    """Sapiens2's crops: cv2 INTER_CUBIC where the warp enlarges (both scale factors >= 1),
    INTER_LINEAR where it shrinks; uint8 frames saturate to 0..255 as cv2 does."""
    gen = torch.Generator().manual_seed(7)
    frames = (torch.rand(1, 3, 60, 70, generator=gen) * 255).to(torch.uint8)
    # A 12x14 box enlarged into a 32x24 crop, and a 50x60 box shrunk into it.
    boxes = torch.tensor([[20.2, 15.7, 32.1, 29.9], [3.0, 2.0, 53.0, 62.0]])
    result = crop_persons(frames, torch.tensor([0, 0]), boxes, OUT, enlarge_mode="bicubic")
    assert result.matrix[0, 0, 0] >= 1 and result.matrix[1, 0, 0] < 1
    inverse = invert_affine(result.matrix.double())
    for n, reference in ((0, _bicubic_zero_border), (1, _bilinear_zero_border)):
        for u, v in ((0, 0), (7, 3), (23, 31), (12, 20), (5, 29)):
            x, y = inverse[n, :, :2] @ torch.tensor([u, v], dtype=torch.float64) + inverse[n, :, 2]
            expected = reference(frames[0], float(x), float(y)).clamp(0, 255)
            _assert_close(result.crops[n, :, v, u], expected, atol=2e-3, rtol=0)
    bilinear = crop_persons(frames, torch.tensor([0, 0]), boxes, OUT)
    assert torch.equal(bilinear.crops[1], result.crops[1])
    assert (bilinear.crops[0] - result.crops[0]).abs().max() > 1.0


def test_crops_of_a_coordinate_ramp_read_back_their_source_location() -> None:
    h, w = 60, 80
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    frames = torch.stack((xs, ys, torch.full_like(xs, 100.0)))[None]
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 5.0, 75.0, 25.0]])
    result = crop_persons(frames, torch.tensor([0, 0]), boxes, OUT)
    vs, us = torch.meshgrid(
        torch.arange(OUT[0]).float(), torch.arange(OUT[1]).float(), indexing="ij"
    )
    crop_px = torch.stack((us, vs), dim=-1).reshape(1, -1, 2).expand(2, -1, -1)
    source = points_crop_to_image(crop_px, result.center, result.scale, OUT)
    inside = ((source >= 0) & (source <= torch.tensor([w - 1.0, h - 1.0]))).all(-1)
    sampled = result.crops[:, :2].flatten(2).transpose(1, 2)  # (N, Ho*Wo, 2): ramp values x, y
    assert inside.sum() > 100
    assert (sampled - source)[inside].abs().max() < 1e-3
    assert (result.crops[:, 2].flatten(1)[inside] - 100).abs().max() < 1e-3


def test_crop_persons_gathers_by_frame_index_and_keeps_order() -> None:
    frames = torch.arange(1, 4, dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 3, 50, 60) * 10
    frame_index = torch.tensor([2, 0, 2, 1])
    boxes = torch.tensor([[20.0, 20.0, 30.0, 30.0]]).expand(4, 4)
    result = crop_persons(frames, frame_index, boxes, OUT)
    assert result.crops.dtype == torch.float32
    assert result.crops.shape == (4, 3, *OUT)
    expected = torch.tensor([30.0, 10.0, 30.0, 20.0])
    _assert_close(result.crops.flatten(1).amin(1), expected, atol=1e-4)
    _assert_close(result.crops.flatten(1).amax(1), expected, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_crop_persons_keeps_float_frame_dtype(dtype: torch.dtype) -> None:
    frames = torch.full((1, 3, 20, 20), 7.0, dtype=dtype)
    result = crop_persons(frames, torch.tensor([0]), torch.tensor([[5.0, 5.0, 12.0, 12.0]]), OUT)
    assert result.crops.dtype == dtype
    assert result.crops.float().sub(7).abs().max() < 1e-2


def test_crop_persons_empty_and_default_size() -> None:
    frames = torch.zeros(2, 3, 40, 30, dtype=torch.uint8)
    empty = crop_persons(frames, torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert empty.crops.shape == (0, 3, *INPUT_SIZE)
    assert empty.center.shape == empty.scale.shape == (0, 2)
    assert empty.matrix.shape == (0, 2, 3)
    full = crop_persons(frames, torch.tensor([1]), torch.tensor([[0.0, 0.0, 30.0, 40.0]]))
    assert full.crops.shape == (1, 3, *INPUT_SIZE)


@pytest.mark.parametrize(
    ("frame_index", "boxes", "match"),
    [
        (torch.tensor([0, 2]), torch.ones(2, 4), r"frame_index: expected values in \[0, 2\)"),
        (torch.tensor([0, -1]), torch.ones(2, 4), r"got range \[-1, 0\]"),
        (torch.tensor([0.0, 1.0]), torch.ones(2, 4), "frame_index: expected an integer dtype"),
        (torch.tensor([0, 1]), torch.ones(3, 4), r"boxes: expected shape \(2, 4\)"),
        (torch.tensor([0, 1]), torch.tensor([[0.0, 0, 5, 5], [3, 3, 3, 3]]), r"degenerate rows"),
    ],
)
def test_crop_persons_validates_input(
    frame_index: torch.Tensor, boxes: torch.Tensor, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        crop_persons(torch.zeros(2, 3, 10, 10), frame_index, boxes, OUT)


def _bad_crop_result() -> CropResult:
    zeros = torch.zeros
    return CropResult(
        crops=zeros(2, 3, 4, 4), center=zeros(1, 2), scale=zeros(2, 2), matrix=zeros(2, 2, 3)
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: crop_persons(torch.zeros(2, 1, 10, 10), torch.tensor([0]), torch.ones(1, 4)),
            r"frames: expected shape \(B, 3, H, W\), got \(2, 1, 10, 10\)",
        ),
        (lambda: boxes_to_center_scale(torch.zeros(3, 5)), r"boxes_xyxy: expected shape \(N, 4\)"),
        (lambda: udp_warp_matrix(torch.zeros(2, 2), torch.ones(3, 2)), r"scale: .* \(2, 2\)"),
        (lambda: invert_affine(torch.zeros(2, 3, 3)), r"matrix: expected shape \(N, 2, 3\)"),
        (lambda: points_image_to_crop(torch.zeros(2, 5, 2), torch.zeros(1, 2, 3)), r"\(2, 2, 3\)"),
        (
            lambda: points_crop_to_image(torch.zeros(2, 5, 3), torch.zeros(2, 2), torch.ones(2, 2)),
            r"points: expected shape \(N, K, 2\)",
        ),
        (lambda: resize_whole(torch.zeros(1, 3, 4, 4), (0, 4)), r"size: expected a \(height"),
        (_bad_crop_result, r"CropResult.center: expected shape \(2, 2\), got \(1, 2\)"),
    ],
)
def test_geometry_validates_shapes(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
