"""Whole-frame dense mode, as the official Sapiens demos run segmentation, depth and normals.

Each frame is resized to the model input size (1024 x 768 for released models) without keeping
its aspect ratio, analysed once, and the raw outputs are resized bilinearly (align_corners=False)
to the output grid: part labels are the arg-max of the resized logits, depth is kept where the
frame shows a person, normals are L2-normalised there.

"Shows a person" is the segmentation foreground (label > 0) when seg runs, else the union of the
person boxes. Ownership (the ``person`` map) is given by the boxes: a foreground pixel belongs to
the highest-scoring person whose box contains its centre, and to nobody when no box does (a
person the detector missed still gets parts, depth and normals, but no owner). Off the
foreground: part 0, person 0, depth NaN and normal 0 -- the conventions of the crop mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from models._persons import FrameMaps

__all__ = ["frames_to_input", "whole_frame_maps"]


def frames_to_input(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """(F, 3, H, W) uint8 frames -> (F, 3, h, w) float32 on the 0-255 scale, resized to
    ``size`` bilinearly without keeping the aspect ratio (the demos' whole-image resize)."""
    return F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False)


def _owners(
    boxes: Tensor, scores: Tensor, frame_index: Tensor, n_frames: int, frame_size, out_size
) -> Tensor:
    """(F, H', W') int32: 1 + row (within its frame) of the highest-scoring person whose box
    contains the pixel centre, 0 where no box does."""
    h, w = out_size
    device = boxes.device
    sy, sx = frame_size[0] / h, frame_size[1] / w
    ys = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * sy
    xs = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * sx
    owner = torch.zeros((n_frames, h, w), dtype=torch.int32, device=device)
    best = torch.full((n_frames, h, w), -1.0, dtype=torch.float64, device=device)
    slot = torch.zeros(len(boxes), dtype=torch.int32)
    for f in range(n_frames):
        rows = torch.nonzero(frame_index == f).flatten().tolist()
        for k, r in enumerate(rows):
            slot[r] = k + 1
    for r in range(len(boxes)):
        b = boxes[r].double()
        inside = ((ys >= b[1]) & (ys <= b[3]))[:, None] & ((xs >= b[0]) & (xs <= b[2]))[None, :]
        f = int(frame_index[r])
        better = inside & (float(scores[r]) > best[f])
        best[f] = torch.where(better, float(scores[r]), best[f])
        owner[f] = torch.where(better, slot[r].item(), owner[f])
    return owner


def whole_frame_maps(
    outputs: Mapping[str, Tensor],
    *,
    boxes: Tensor,
    scores: Tensor,
    frame_index: Tensor,
    n_frames: int,
    frame_size: tuple[int, int],
    out_size: tuple[int, int],
    tasks: tuple[str, ...],
    on_grid: bool = False,
) -> FrameMaps:
    """Raw whole-frame outputs ``{task: (F, C, h, w)}`` -> frame maps on the output grid.

    Args:
        outputs: seg logits, depth, normal and/or pointmap of each frame (missing tasks are
            skipped).
        boxes, scores, frame_index: the persons, (N, 4) frame px, (N,), (N,).
        n_frames: F.
        frame_size: (H, W) of the frames.
        out_size: (H', W') of the maps.
        tasks: dense tasks to produce.
        on_grid: the outputs are already on the output grid, normals and pointmaps final
            (``models._frame_maps2``): they are masked, not resized or renormalised.
    """
    device = next(iter(outputs.values())).device if outputs else torch.device("cpu")
    shape = (n_frames, *out_size)

    def resized(task: str) -> Tensor:
        if on_grid:
            return outputs[task].float()
        return F.interpolate(
            outputs[task].float(), size=out_size, mode="bilinear", align_corners=False
        )

    owner = _owners(
        boxes.to(device), scores, frame_index.to(device), n_frames, frame_size, out_size
    )
    part = None
    if "seg" in tasks:
        part = resized("seg").argmax(dim=1).to(torch.uint8)
        foreground = part > 0
    else:
        foreground = owner > 0
    depth = normal = pointmap = None
    if "depth" in tasks:
        depth = torch.where(foreground, resized("depth")[:, 0], float("nan"))
    if "normal" in tasks:
        n = resized("normal").permute(0, 2, 3, 1)
        if not on_grid:
            n = n / (torch.linalg.vector_norm(n, dim=-1, keepdim=True) + 1e-5)
        normal = torch.where(foreground[..., None], n, 0.0)
    if "pointmap" in tasks:
        xyz = resized("pointmap").permute(0, 2, 3, 1)
        pointmap = torch.where(foreground[..., None], xyz, float("nan"))
    person = torch.where(foreground, owner, 0)
    assert person.shape == shape
    return FrameMaps(person=person, part=part, depth=depth, normal=normal, pointmap=pointmap)
