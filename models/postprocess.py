"""Post-processing of Sapiens head outputs: pose decoding, flip test, seg labels, depth, normals.

All functions are batched over axis 0 and run on the device of their inputs. Pose keypoints
move between three pixel spaces: heatmap (h, w) -> crop (network input, 1024x768) -> frame;
:func:`heatmap_to_crop` does the first step and ``preprocess.points_crop_to_image`` the second.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_floating, check_shape, check_size, work_dtype
from ._udp import heatmap_argmax, refine_dark_udp
from .spec import INPUT_SIZE

__all__ = [
    "flip_back_heatmaps",
    "flip_test_average",
    "heatmap_to_crop",
    "normalize_normals",
    "resize_depth",
    "seg_labels",
    "udp_decode",
]


def udp_decode(heatmaps: Tensor, blur_kernel: int = 11) -> tuple[Tensor, Tensor]:
    """Decode keypoints from UDP heatmaps: integer argmax plus DARK-UDP refinement.

    Per channel: the integer maximum gives the location and the raw maximum the score; a
    channel whose maximum is <= 0 gets location (-1, -1) and is not refined. The others get one
    Newton step on the log of the Gaussian-blurred heatmap (mmpose ``UDPHeatmap.decode`` with
    ``blur_kernel_size=11``), computed for the whole batch at once.

    Args:
        heatmaps: Pose head output, (N, K, h, w), floating point.
        blur_kernel: Odd Gaussian kernel length of the DARK modulation (cv2 sigma rule).

    Returns:
        ``(keypoints, scores)``: (N, K, 2) locations (x, y) in heatmap pixels and (N, K) raw
        maxima, both float32 (float64 for float64 heatmaps).

    Raises:
        ValueError: On a bad shape, dtype or kernel size.

    Example:
        >>> hm = torch.zeros(1, 1, 8, 8)
        >>> hm[0, 0, 3, 5] = 1.0
        >>> kp, score = udp_decode(hm, blur_kernel=3)
        >>> kp.round().tolist(), score.tolist()
        ([[[5.0, 3.0]]], [[1.0]])
    """
    check_shape("heatmaps", heatmaps, ("N", "K", "h", "w"))
    check_floating("heatmaps", heatmaps)
    if not isinstance(blur_kernel, int) or blur_kernel < 1 or blur_kernel % 2 == 0:
        msg = f"blur_kernel: expected a positive odd int, got {blur_kernel!r}"
        raise ValueError(msg)
    maps = heatmaps.to(work_dtype(heatmaps.dtype))
    locations, scores, valid = heatmap_argmax(maps)
    keypoints = refine_dark_udp(maps, locations, valid, blur_kernel)
    return keypoints, scores


def heatmap_to_crop(
    keypoints_hm: Tensor, heatmap_size: tuple[int, int], input_size: tuple[int, int] = INPUT_SIZE
) -> Tensor:
    """Scale heatmap-pixel keypoints to crop (network input) pixels, UDP style.

    ``x_crop = x_hm * (W_in - 1) / (W_hm - 1)`` and likewise for y, so that the first and last
    heatmap pixel centres land on the first and last crop pixel centres. Followed by
    ``preprocess.points_crop_to_image`` this gives the official back-projection
    ``x_img = x_hm / (W_hm - 1) * sw + cx - 0.5 * sw``. Invalid (-1) keypoints are scaled like
    the others; use the scores to mask them.

    Args:
        keypoints_hm: Keypoints (x, y) in heatmap pixels, (N, K, 2).
        heatmap_size: Heatmap ``(height, width)``, e.g. (256, 192).
        input_size: Crop ``(height, width)``, :data:`INPUT_SIZE` by default.

    Returns:
        Keypoints in crop pixels, (N, K, 2), floating point.

    Raises:
        ValueError: On a bad shape or size.
    """
    check_shape("keypoints_hm", keypoints_hm, ("N", "K", 2))
    check_size("heatmap_size", heatmap_size, minimum=2)
    check_size("input_size", input_size, minimum=2)
    (h_hm, w_hm), (h_in, w_in) = heatmap_size, input_size
    dtype = work_dtype(keypoints_hm.dtype)
    factor = torch.tensor(
        ((w_in - 1) / (w_hm - 1), (h_in - 1) / (h_hm - 1)), dtype=dtype, device=keypoints_hm.device
    )
    return keypoints_hm.to(dtype) * factor


def flip_back_heatmaps(heatmaps_of_flipped_input: Tensor, flip_indices: Tensor) -> Tensor:
    """Undo a horizontal input flip on heatmaps: flip along W and swap left/right channels.

    Output channel ``k`` is the W-flipped input channel ``flip_indices[k]`` (mmpose
    ``flip_heatmaps`` with ``flip_mode='heatmap'`` and ``shift_heatmap=False``, the UDP setting).

    Args:
        heatmaps_of_flipped_input: Heatmaps predicted for flipped crops, (N, K, h, w).
        flip_indices: Index of each keypoint's mirror keypoint, (K,), integer, in ``[0, K)``.

    Returns:
        Heatmaps aligned with the unflipped crops, (N, K, h, w), same dtype.

    Raises:
        ValueError: On bad shapes, dtypes or out-of-range indices.
    """
    check_shape("heatmaps_of_flipped_input", heatmaps_of_flipped_input, ("N", "K", "h", "w"))
    k = heatmaps_of_flipped_input.shape[1]
    check_shape("flip_indices", flip_indices, (k,))
    if flip_indices.is_floating_point() or flip_indices.dtype == torch.bool:
        msg = f"flip_indices: expected an integer dtype, got {flip_indices.dtype}"
        raise ValueError(msg)
    index = flip_indices.to(device=heatmaps_of_flipped_input.device, dtype=torch.long)
    if k:
        lo, hi = (int(v) for v in torch.aminmax(index))
        if lo < 0 or hi >= k:
            msg = f"flip_indices: expected values in [0, {k}), got range [{lo}, {hi}]"
            raise ValueError(msg)
    return heatmaps_of_flipped_input.flip(-1).index_select(1, index)


def flip_test_average(
    heatmaps: Tensor, heatmaps_of_flipped_input: Tensor, flip_indices: Tensor
) -> Tensor:
    """Average the heatmaps of the crops and of their horizontal flips (flip test).

    Args:
        heatmaps: Heatmaps of the crops, (N, K, h, w).
        heatmaps_of_flipped_input: Heatmaps of the W-flipped crops, (N, K, h, w).
        flip_indices: Index of each keypoint's mirror keypoint, (K,).

    Returns:
        ``0.5 * (heatmaps + flip_back_heatmaps(heatmaps_of_flipped_input, flip_indices))``,
        (N, K, h, w), computed in float32 (float64 kept) whatever the heatmaps' dtype.

    Raises:
        ValueError: On mismatched shapes or bad flip indices.
    """
    check_shape("heatmaps", heatmaps, ("N", "K", "h", "w"))
    check_shape("heatmaps_of_flipped_input", heatmaps_of_flipped_input, tuple(heatmaps.shape))
    dtype = work_dtype(heatmaps.dtype)
    back = flip_back_heatmaps(heatmaps_of_flipped_input, flip_indices)
    return 0.5 * (heatmaps.to(dtype) + back.to(dtype))


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with ``align_corners=False`` in float32 (float64 kept)."""
    x = maps.to(work_dtype(maps.dtype))
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def seg_labels(logits: Tensor, size: tuple[int, int], threshold: float = 0.3) -> Tensor:
    """Per-pixel class labels: bilinear upsampling of the logits, then argmax over classes.

    A single-channel (foreground) model is thresholded instead: ``sigmoid(logit) > threshold``
    gives label 1. Upsampling goes straight to ``size`` (the lite path); the full mmseg path
    resamples twice, which callers reproduce by resizing the logits to the network input size
    (bilinear, ``align_corners=False``) before calling this.

    Args:
        logits: Seg head output, (N, C, h, w), floating point.
        size: Output ``(height, width)``, usually the original frame size.
        threshold: Sigmoid threshold used when ``C == 1``.

    Returns:
        Labels, (N, H, W), int64.

    Raises:
        ValueError: On a bad shape, dtype or size.
    """
    check_shape("logits", logits, ("N", "C", "h", "w"))
    check_floating("logits", logits)
    check_size("size", size)
    if logits.shape[1] == 0:
        msg = f"logits: expected at least 1 channel, got shape {tuple(logits.shape)}"
        raise ValueError(msg)
    up = _upsample(logits, size)
    if logits.shape[1] == 1:
        return (torch.sigmoid(up[:, 0]) > threshold).long()
    return up.argmax(dim=1)


def resize_depth(depth: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize relative depth maps (``align_corners=False``).

    Args:
        depth: Depth head output, (N, 1, h, w), floating point.
        size: Output ``(height, width)``.

    Returns:
        Depth, (N, H, W), float32 (float64 for float64 input).

    Raises:
        ValueError: On a bad shape, dtype or size.
    """
    check_shape("depth", depth, ("N", 1, "h", "w"))
    check_floating("depth", depth)
    check_size("size", size)
    return _upsample(depth, size)[:, 0]


def normalize_normals(
    normals: Tensor, size: tuple[int, int] | None = None, eps: float = 1e-5
) -> Tensor:
    """Optionally resize surface normals bilinearly, then scale them to unit length.

    ``n / (||n|| + eps)`` per pixel, as the official consumers do.

    Args:
        normals: Normal head output (x, y, z), (N, 3, h, w), floating point.
        size: Output ``(height, width)``; None keeps the input size.
        eps: Added to the norm to avoid division by zero.

    Returns:
        Normals, (N, 3, H, W), float32 (float64 for float64 input).

    Raises:
        ValueError: On a bad shape, dtype or size.
    """
    check_shape("normals", normals, ("N", 3, "h", "w"))
    check_floating("normals", normals)
    if size is not None:
        check_size("size", size)
    x = _upsample(normals, size) if size is not None else normals.to(work_dtype(normals.dtype))
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)
