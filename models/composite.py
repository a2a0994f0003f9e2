"""Placing dense head outputs of person crops back into frame coordinates."""

from __future__ import annotations

import torch
from kornia.geometry.transform import warp_affine
from torch import Tensor

from models.spec import INPUT_SIZE

__all__ = ["crop_maps_to_frame", "frame_to_map_matrix"]


def frame_to_map_matrix(
    matrix: Tensor, map_size: tuple[int, int], crop_size: tuple[int, int] = INPUT_SIZE
) -> Tensor:
    """Compose the frame->crop UDP warp with crop->head-map scaling.

    A head map of size (h, w) covers the crop (Hc, Wc) as a bilinear, ``align_corners=False``
    resize would (the official path upsamples logits that way): crop pixel x' sits at map
    pixel u = (x' + 0.5) * w / Wc - 0.5.

    Args:
        matrix: frame px -> crop px, (N, 2, 3).
        map_size: (h, w) of the head output.
        crop_size: (Hc, Wc) of the crop the head saw.

    Returns:
        frame px -> map px, (N, 2, 3).
    """
    sy, sx = map_size[0] / crop_size[0], map_size[1] / crop_size[1]
    scale = matrix.new_tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    return scale[:, :2] @ matrix + torch.cat((matrix.new_zeros(2, 2), scale[:, 2:]), dim=1)


def _homogeneous(m: Tensor) -> Tensor:
    """(N, 2, 3) affine -> (N, 3, 3)."""
    last = m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)
    return torch.cat((m, last), dim=1)


def crop_maps_to_frame(
    maps: Tensor,
    matrix: Tensor,
    frame_size: tuple[int, int],
    *,
    crop_size: tuple[int, int] = INPUT_SIZE,
    mode: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """Resample per-crop maps (N, C, h, w) onto their frames: (N, C, H, W) and a coverage mask.

    Args:
        maps: head outputs (logits, depth, normals) of N crops, floating point.
        matrix: the crops' frame px -> crop px warps, (N, 2, 3).
        frame_size: (H, W) of the frame (or of a downscaled output grid, with ``matrix``
            scaled accordingly).
        crop_size: (Hc, Wc) of the crops.
        mode: ``bilinear`` or ``nearest``.

    Returns:
        ``(maps_in_frame, covered)`` where ``covered`` (N, 1, H, W) is True where the crop saw
        the frame pixel; outside it the maps are 0.
    """
    if maps.ndim != 4 or matrix.shape != (maps.shape[0], 2, 3):
        msg = (
            f"expected maps (N, C, h, w) and matrix (N, 2, 3), got {tuple(maps.shape)} "
            f"and {tuple(matrix.shape)}"
        )
        raise ValueError(msg)
    m = frame_to_map_matrix(matrix.to(torch.float32), maps.shape[-2:], crop_size)
    # kornia's warp_affine takes the src->dst matrix: here src = map, dst = frame.
    m_out = torch.linalg.inv(_homogeneous(m))[:, :2].to(maps.dtype)
    out = warp_affine(
        maps, m_out, dsize=frame_size, mode=mode, padding_mode="zeros", align_corners=True
    )
    ones = maps.new_ones((maps.shape[0], 1, *maps.shape[-2:]))
    covered = (
        warp_affine(
            ones, m_out, dsize=frame_size, mode="nearest", padding_mode="zeros", align_corners=True
        )
        > 0.5
    )
    return out, covered
