"""Pre-processing for Sapiens: normalisation, whole-image resize and UDP person crops.

Conventions used throughout: images are RGB on the 0-255 scale with shape (B, 3, H, W); sizes
are ``(height, width)``; points are ``(x, y)`` pixel coordinates with pixel centres on integers
(the cv2 convention). Results live on the device of the main input (frames, images, points);
small side inputs such as boxes, frame indices or centres are moved there. ``INPUT_SIZE`` is
re-exported from :mod:`models.spec`.

Person crops follow the full mmpose top-down path (SPEC-sapiens.md section 3.2): box -> centre
and padded scale with a fixed 3:4 aspect -> unbiased (UDP) affine warp straight from the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor

from ._checks import check_floating, check_image_dtype, check_shape, check_size, work_dtype
from .spec import INPUT_SIZE

__all__ = [
    "CONFIG_NORM",
    "INPUT_SIZE",
    "LITE_NORM",
    "CropResult",
    "Normalization",
    "boxes_to_center_scale",
    "crop_persons",
    "invert_affine",
    "normalize",
    "points_crop_to_image",
    "points_image_to_crop",
    "resize_whole",
    "udp_warp_matrix",
]


@dataclass(frozen=True, slots=True)
class Normalization:
    """Per-channel RGB mean and standard deviation on the 0-255 scale.

    Args:
        mean: Mean of the R, G and B channels.
        std: Standard deviation of the R, G and B channels; each must be positive.

    Raises:
        ValueError: If a field does not hold three values or a std is not positive.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        for field_name in ("mean", "std"):
            values = getattr(self, field_name)
            if len(values) != 3:
                msg = f"Normalization.{field_name}: expected 3 values (R, G, B), got {values!r}"
                raise ValueError(msg)
        if min(self.std) <= 0:
            msg = f"Normalization.std: expected positive values, got {self.std!r}"
            raise ValueError(msg)


CONFIG_NORM = Normalization(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
"""Constants of the official training/evaluation configs (the default)."""

LITE_NORM = Normalization(mean=(123.5, 116.5, 103.5), std=(58.5, 57.0, 57.5))
"""Rounded constants used by the official Sapiens-Lite demos."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CropResult:
    """Person crops and the geometry that maps them back to their frames.

    Args:
        crops: Warped crops, (N, 3, Ho, Wo).
        center: Box centres in frame pixels, (N, 2) as (x, y).
        scale: Padded, aspect-fixed box sizes in frame pixels, (N, 2) as (w, h).
        matrix: UDP affine maps frame px -> crop px, (N, 2, 3).

    Raises:
        ValueError: If the fields are not aligned on axis 0 or have the wrong shape.
    """

    crops: Tensor
    center: Tensor
    scale: Tensor
    matrix: Tensor

    def __post_init__(self) -> None:
        n = self.crops.shape[0] if self.crops.ndim == 4 else -1
        check_shape("CropResult.crops", self.crops, ("N", 3, "Ho", "Wo"))
        check_shape("CropResult.center", self.center, (n, 2))
        check_shape("CropResult.scale", self.scale, (n, 2))
        check_shape("CropResult.matrix", self.matrix, (n, 2, 3))


def normalize(
    images: Tensor, norm: Normalization = CONFIG_NORM, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Subtract the mean and divide by the std, per RGB channel.

    Args:
        images: RGB images on the 0-255 scale, (B, 3, H, W), uint8 or float.
        norm: Normalisation constants, :data:`CONFIG_NORM` by default.
        dtype: Floating output dtype; half types are computed in float32, then cast.

    Returns:
        Normalised images, (B, 3, H, W), ``dtype``.

    Raises:
        ValueError: On a bad shape, input dtype or non-floating ``dtype``.
    """
    check_shape("images", images, ("B", 3, "H", "W"))
    check_image_dtype("images", images)
    if not dtype.is_floating_point:
        msg = f"dtype: expected a floating-point dtype, got {dtype}"
        raise ValueError(msg)
    compute = torch.promote_types(dtype, torch.float32)
    mean = torch.tensor(norm.mean, dtype=compute, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=compute, device=images.device).view(1, 3, 1, 1)
    return ((images.to(compute) - mean) / std).to(dtype)


def resize_whole(images: Tensor, size: tuple[int, int] = INPUT_SIZE) -> Tensor:
    """Resize whole images to ``size``, ignoring the aspect ratio (seg, depth, normal input).

    Bilinear with half-pixel centres (``align_corners=False``) and no antialiasing, the
    semantics of ``cv2.resize(..., INTER_LINEAR)``; the result is not rounded back to uint8.

    Args:
        images: Images, (B, C, H, W), uint8 or float.
        size: Output ``(height, width)``, :data:`INPUT_SIZE` by default.

    Returns:
        Resized images, (B, C, *size): float32 for uint8 input, else the input dtype.

    Raises:
        ValueError: On a bad shape, dtype or size.
    """
    check_shape("images", images, ("B", "C", "H", "W"))
    check_image_dtype("images", images)
    check_size("size", size)
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    x = images.to(work_dtype(images.dtype))
    out = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)
    return out.to(out_dtype)


def boxes_to_center_scale(
    boxes_xyxy: Tensor, padding: float = 1.25, aspect: float = INPUT_SIZE[1] / INPUT_SIZE[0]
) -> tuple[Tensor, Tensor]:
    """Turn boxes into centres and padded scales with a fixed width/height ratio.

    The centre is the box midpoint and the scale is ``(w, h) * padding``; the short side is then
    enlarged so that ``w / h == aspect``: if ``w > h * aspect`` then ``h = w / aspect``, else
    ``w = h * aspect`` (mmpose ``GetBBoxCenterScale`` + ``TopdownAffine``).

    Args:
        boxes_xyxy: Boxes (x1, y1, x2, y2) in pixels, (N, 4).
        padding: Scale factor applied to the box size.
        aspect: Target width / height; 768 / 1024 by default.

    Returns:
        ``(center, scale)``, each (N, 2), float32 (float64 for float64 boxes).

    Raises:
        ValueError: On a bad shape.
    """
    check_shape("boxes_xyxy", boxes_xyxy, ("N", 4))
    boxes = boxes_xyxy.to(work_dtype(boxes_xyxy.dtype))
    center = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    w, h = ((boxes[:, 2:] - boxes[:, :2]) * padding).unbind(-1)
    widen = torch.stack((w, w / aspect), dim=-1)
    heighten = torch.stack((h * aspect, h), dim=-1)
    scale = torch.where((w > h * aspect).unsqueeze(-1), widen, heighten)
    return center, scale


def udp_warp_matrix(
    center: Tensor, scale: Tensor, out_size: tuple[int, int] = INPUT_SIZE
) -> Tensor:
    """Unbiased (UDP) affine maps from frame pixels to crop pixels, rotation 0.

    ``x' = (x - cx + 0.5 * sw) * (W_out - 1) / sw`` and likewise for y, so the box edges map to
    the centres of the first and last crop pixels.

    Args:
        center: Box centres (x, y), (N, 2).
        scale: Box sizes (w, h), (N, 2); must be positive.
        out_size: Crop ``(height, width)``.

    Returns:
        Affine matrices, (N, 2, 3), float32 (float64 for float64 centres).

    Raises:
        ValueError: On a bad shape or size.
    """
    check_shape("center", center, ("N", 2))
    check_shape("scale", scale, (center.shape[0], 2))
    check_size("out_size", out_size, minimum=2)
    dtype = work_dtype(center.dtype)
    c, s = center.to(dtype), scale.to(device=center.device, dtype=dtype)
    h_out, w_out = out_size
    sx, sy = (w_out - 1) / s[:, 0], (h_out - 1) / s[:, 1]
    zero = torch.zeros_like(sx)
    rows = (sx, zero, sx * (0.5 * s[:, 0] - c[:, 0]), zero, sy, sy * (0.5 * s[:, 1] - c[:, 1]))
    return torch.stack(rows, dim=-1).view(-1, 2, 3)


def invert_affine(matrix: Tensor) -> Tensor:
    """Invert 2x3 affine maps in closed form.

    Args:
        matrix: Affine maps ``[A | t]``, (N, 2, 3), floating point.

    Returns:
        Inverse maps ``[A^-1 | -A^-1 t]``, (N, 2, 3).

    Raises:
        ValueError: On a bad shape or dtype.
    """
    check_shape("matrix", matrix, ("N", 2, 3))
    check_floating("matrix", matrix)
    a, b, t0 = matrix[:, 0].unbind(-1)
    c, d, t1 = matrix[:, 1].unbind(-1)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    rows = (ia, ib, -(ia * t0 + ib * t1), ic, id_, -(ic * t0 + id_ * t1))
    return torch.stack(rows, dim=-1).view(-1, 2, 3)


def crop_persons(
    frames: Tensor,
    frame_index: Tensor,
    boxes: Tensor,
    out_size: tuple[int, int] = INPUT_SIZE,
    *,
    padding: float = 1.25,
    enlarge_mode: str = "bilinear",
) -> CropResult:
    """Cut one UDP-warped crop per person box out of a batch of frames.

    Equivalent to ``cv2.warpAffine(frame, M, (Wo, Ho), INTER_LINEAR)`` with a zero border, done
    with kornia's ``warp_affine`` (bilinear, zeros padding, ``align_corners=True``); integer
    pixel coordinates are pixel centres on both sides, as in cv2 (checked by the unit tests
    against hand-computed bilinear samples). Frames are converted and warped one at a time
    and expanded (not copied) over their persons, so memory never holds N full-size frames.
    Sampling runs in float32 (float64 for float64 frames) whatever the frame dtype.

    Args:
        frames: RGB frames, (B, 3, H, W), uint8 or float.
        frame_index: Frame of each person, (N,), integer, values in ``[0, B)``.
        boxes: Person boxes (x1, y1, x2, y2) in frame pixels, (N, 4); each needs a positive
            width or height. Boxes may extend past the frame (the outside reads as 0).
        out_size: Crop ``(height, width)``, :data:`INPUT_SIZE` by default.
        padding: Box scale factor, 1.25 as in the official configs.
        enlarge_mode: ``bilinear`` (Sapiens) or ``bicubic``: crops whose warp enlarges (the
            smaller of its two scale factors is >= 1) are sampled bicubically (cv2's
            INTER_CUBIC, as Sapiens2 does), the others bilinearly.

    Returns:
        :class:`CropResult` on the frames' device; ``crops`` keep a float frame dtype and are
        float32 for uint8 frames. N == 0 gives empty tensors.

    Raises:
        ValueError: On bad shapes/dtypes, an out-of-range frame index or a degenerate box.
    """
    check_shape("frames", frames, ("B", 3, "H", "W"))
    check_image_dtype("frames", frames)
    check_shape("frame_index", frame_index, ("N",))
    check_shape("boxes", boxes, (frame_index.shape[0], 4))
    check_size("out_size", out_size, minimum=2)
    if enlarge_mode not in ("bilinear", "bicubic"):
        raise ValueError(f"enlarge_mode: expected 'bilinear' or 'bicubic', got {enlarge_mode!r}")
    if frame_index.is_floating_point() or frame_index.dtype == torch.bool:
        msg = f"frame_index: expected an integer dtype, got {frame_index.dtype}"
        raise ValueError(msg)
    device, n_frames, n = frames.device, frames.shape[0], frame_index.shape[0]
    compute = work_dtype(frames.dtype)
    # Geometry and checks run where the boxes are (the host, in the pipeline), so cropping
    # never waits on the device; only the results move to it.
    frame_index = frame_index.to(dtype=torch.long)
    center, scale = boxes_to_center_scale(boxes, padding=padding)
    matrix = udp_warp_matrix(center, scale, out_size)
    out_dtype = frames.dtype if frames.is_floating_point() else torch.float32
    crops = torch.zeros((n, 3, *out_size), dtype=out_dtype, device=device)
    if n:
        _check_crop_inputs(frame_index, scale, n_frames)
        counts = torch.bincount(frame_index, minlength=n_frames).tolist()
    cubic = None
    if enlarge_mode == "bicubic":  # the smaller scale factor of each (axis-aligned) warp
        cubic = torch.minimum(matrix[:, 0, 0].abs(), matrix[:, 1, 1].abs()) >= 1
    center, scale, matrix = (t.to(device, non_blocking=True) for t in (center, scale, matrix))
    if n == 0:
        return CropResult(crops=crops, center=center, scale=scale, matrix=matrix)
    if cubic is None or not bool(cubic.any()):
        index = frame_index.to(device, non_blocking=True)
        _warp_by_frame(frames, index, counts, matrix.to(compute), out=crops)
        return CropResult(crops=crops, center=center, scale=scale, matrix=matrix)
    for mode, chosen in (("bilinear", ~cubic), ("bicubic", cubic)):  # each crop warped once
        rows = torch.nonzero(chosen).flatten()
        if len(rows) == 0:
            continue
        sub = torch.zeros((len(rows), 3, *out_size), dtype=out_dtype, device=device)
        picked = frame_index[rows]
        sub_counts = torch.bincount(picked, minlength=n_frames).tolist()
        on_device = rows.to(device)
        warp = matrix[on_device].to(compute)
        _warp_by_frame(frames, picked.to(device), sub_counts, warp, out=sub, mode=mode)
        if mode == "bicubic" and not frames.is_floating_point():
            sub.clamp_(0, 255)  # cv2 saturates cubic overshoot of uint8 images
        crops[on_device] = sub
    return CropResult(crops=crops, center=center, scale=scale, matrix=matrix)


def _warp_by_frame(
    frames: Tensor,
    frame_index: Tensor,
    counts: list[int],
    matrix: Tensor,
    *,
    out: Tensor,
    mode: str = "bilinear",
) -> None:
    """Warp each frame once for all of its persons and write the crops into ``out`` (N, 3, Ho, Wo).

    ``counts[b]`` is the number of persons of frame b. A frame is converted to the dtype of
    ``matrix`` and expanded (a stride-0 view) over its persons, so no more than one converted
    frame exists at a time.
    """
    order = torch.argsort(frame_index, stable=True)
    start = 0
    for b, count in enumerate(counts):
        if count == 0:
            continue
        rows = order[start : start + count]
        start += count
        src = frames[b : b + 1].to(matrix.dtype).expand(count, -1, -1, -1)
        warped = warp_affine(
            src,
            matrix[rows],
            (out.shape[2], out.shape[3]),
            mode=mode,
            padding_mode="zeros",
            align_corners=True,
        )
        out[rows] = warped.to(out.dtype)


def _check_crop_inputs(frame_index: Tensor, scale: Tensor, n_frames: int) -> None:
    """Validate frame indices and box sizes of a non-empty crop request (on the host when they
    are there; on a device this waits for it)."""
    lo, hi = (int(v) for v in torch.aminmax(frame_index))
    if lo < 0 or hi >= n_frames:
        msg = f"frame_index: expected values in [0, {n_frames}), got range [{lo}, {hi}]"
        raise ValueError(msg)
    bad = torch.nonzero(~(scale > 0).all(dim=-1)).flatten()
    if bad.numel():
        msg = (
            f"boxes: expected a positive width or height, got degenerate rows "
            f"{bad[:10].tolist()}; drop them before cropping"
        )
        raise ValueError(msg)


def points_image_to_crop(points: Tensor, matrix: Tensor) -> Tensor:
    """Map frame-pixel points into crop pixels with each crop's affine.

    Args:
        points: Points (x, y) in frame pixels, (N, K, 2).
        matrix: Frame -> crop affine maps, (N, 2, 3).

    Returns:
        Points in crop pixels, (N, K, 2), floating point.

    Raises:
        ValueError: On bad shapes.
    """
    check_shape("points", points, ("N", "K", 2))
    check_shape("matrix", matrix, (points.shape[0], 2, 3))
    dtype = torch.promote_types(work_dtype(points.dtype), matrix.dtype)
    m = matrix.to(device=points.device, dtype=dtype)
    return points.to(dtype) @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


def points_crop_to_image(
    points: Tensor, center: Tensor, scale: Tensor, in_size: tuple[int, int] = INPUT_SIZE
) -> Tensor:
    """Map crop-pixel points back to frame pixels: the exact inverse of the UDP warp.

    ``x = x' * sw / (W_in - 1) + cx - 0.5 * sw`` and likewise for y.

    Args:
        points: Points (x, y) in crop pixels, (N, K, 2).
        center: Box centres (x, y), (N, 2).
        scale: Box sizes (w, h), (N, 2).
        in_size: Crop ``(height, width)`` the points refer to.

    Returns:
        Points in frame pixels, (N, K, 2), floating point.

    Raises:
        ValueError: On bad shapes or size.
    """
    check_shape("points", points, ("N", "K", 2))
    check_shape("center", center, (points.shape[0], 2))
    check_shape("scale", scale, (points.shape[0], 2))
    check_size("in_size", in_size, minimum=2)
    dtype = work_dtype(points.dtype)
    c = center.to(device=points.device, dtype=dtype)[:, None, :]
    s = scale.to(device=points.device, dtype=dtype)[:, None, :]
    h_in, w_in = in_size
    span = torch.tensor((w_in - 1, h_in - 1), dtype=dtype, device=points.device)
    return points.to(dtype) * (s / span) + c - 0.5 * s
