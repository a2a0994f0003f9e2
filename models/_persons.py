"""Composite per-person dense outputs into per-frame maps.

Ownership rule for overlapping persons: every output pixel belongs to the person whose crop sees
it with the highest foreground probability (1 - softmax probability of the background class of
the part-segmentation head), provided it exceeds ``fg_threshold``. Depth and normals at that pixel
come from the owner. Without a segmentation head, a pixel belongs to the highest-scoring person
whose (unpadded) box contains it. Pixels no one owns get part 0, person 0, depth NaN and normal 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine
from torch import Tensor

from models.composite import frame_to_map_matrix
from models.spec import INPUT_SIZE

__all__ = ["FrameMaps", "composite_persons"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameMaps:
    """Per-frame dense results on the output grid (F frames of H x W).

    Attributes:
        person: (F, H, W) int32 owner, 0 = none, k = person k-1 of that frame.
        part: (F, H, W) uint8 part labels, or None without seg.
        depth: (F, H, W) float32, NaN off-person, or None.
        normal: (F, H, W, 3) float32 unit vectors, 0 off-person, or None.
        pointmap: (F, H, W, 3) float32 metric xyz, NaN off-person, or None (Sapiens2).
    """

    person: Tensor
    part: Tensor | None
    depth: Tensor | None
    normal: Tensor | None
    pointmap: Tensor | None = None

    def cpu(self) -> FrameMaps:
        """The same maps in CPU memory."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.cpu()

        return FrameMaps(
            person=self.person.cpu(),
            part=move(self.part),
            depth=move(self.depth),
            normal=move(self.normal),
            pointmap=move(self.pointmap),
        )


def _out_to_frame(frame_size: tuple[int, int], out_size: tuple[int, int]) -> Tensor:
    """(3, 3) output-grid px -> frame px, pixel centres aligned (align_corners=False)."""
    sy, sx = frame_size[0] / out_size[0], frame_size[1] / out_size[1]
    return torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _rect(
    matrix: Tensor, crop_size: tuple[int, int], to_out: Tensor, out_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Bounding rectangle (y0, y1, x0, x1) on the output grid of what a crop sees."""
    h, w = crop_size
    corners = torch.tensor([[0.0, 0, 1], [w - 1.0, 0, 1], [0, h - 1.0, 1], [w - 1.0, h - 1.0, 1]])
    m3 = torch.cat((matrix.double(), torch.tensor([[0.0, 0, 1]], dtype=torch.float64)))
    frame_pts = corners.double() @ torch.linalg.inv(m3).T
    out_pts = frame_pts @ torch.linalg.inv(to_out.double()).T
    x0, y0 = out_pts[:, :2].min(0).values.floor().long().tolist()
    x1, y1 = (out_pts[:, :2].max(0).values.ceil().long() + 1).tolist()
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, out_size[1]), min(y1, out_size[0])
    return None if x0 >= x1 or y0 >= y1 else (y0, y1, x0, x1)


def _warp(
    maps: Tensor,
    matrix: Tensor,
    crop_size: tuple[int, int],
    out_to_frame: Tensor,
    rect: tuple[int, int, int, int],
) -> Tensor:
    """Resample one person's (C, h, w) head map onto the output-grid rectangle (C, rh, rw)."""
    y0, y1, x0, x1 = rect
    shift = torch.tensor([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]], dtype=torch.float64)
    m = frame_to_map_matrix(matrix[None].double(), tuple(maps.shape[-2:]), crop_size)[0]
    rect_to_map = (
        torch.cat((m, torch.tensor([[0.0, 0, 1]], dtype=torch.float64)))
        @ out_to_frame.double()
        @ shift
    )
    src_to_dst = torch.linalg.inv(rect_to_map)[:2].to(maps.device, torch.float32)
    return warp_affine(
        maps[None].float(),
        src_to_dst[None],
        dsize=(y1 - y0, x1 - x0),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )[0]


def _warp_all(
    outputs: Mapping[str, Tensor],
    i: int,
    matrix: Tensor,
    crop_size: tuple[int, int],
    out_to_frame: Tensor,
    rect: tuple[int, int, int, int],
) -> dict[str, Tensor]:
    """Person ``i``'s head maps (and, with seg, its crop coverage ``covered``) resampled onto
    ``rect``: the maps of one spatial size are stacked and warped in one call (each channel is
    sampled on its own, so the values are those of one warp per map)."""
    maps = {name: out[i] for name, out in outputs.items()}
    if "seg" in maps:
        maps["covered"] = torch.ones_like(maps["seg"][:1])
    by_size: dict[tuple[int, int], list[str]] = {}
    for name, m in maps.items():
        by_size.setdefault((int(m.shape[-2]), int(m.shape[-1])), []).append(name)
    out: dict[str, Tensor] = {}
    for names in by_size.values():
        stacked = torch.cat([maps[n].float() for n in names]) if len(names) > 1 else maps[names[0]]
        warped = _warp(stacked, matrix, crop_size, out_to_frame, rect)
        start = 0
        for n in names:
            c = int(maps[n].shape[0])
            out[n] = warped[start : start + c]
            start += c
    return out


def composite_persons(
    outputs: Mapping[str, Tensor],
    *,
    matrix: Tensor,
    frame_index: Tensor,
    scores: Tensor,
    boxes: Tensor,
    n_frames: int,
    frame_size: tuple[int, int],
    out_size: tuple[int, int] | None = None,
    crop_size: tuple[int, int] = INPUT_SIZE,
    fg_threshold: float = 0.5,
    tasks: tuple[str, ...] | None = None,
) -> FrameMaps:
    """Paste N persons' dense head outputs into F frame maps (see the module doc for the rule).

    Args:
        outputs: raw head outputs of the N crops: ``seg`` (N, 28, h, w) logits, ``depth``
            (N, 1, h, w), ``normal`` (N, 3, h, w); any subset.
        matrix: frame px -> crop px warps, (N, 2, 3).
        frame_index: frame of each person, (N,).
        scores: detection scores, (N,).
        boxes: detection boxes xyxy in frame px, (N, 4).
        n_frames: F.
        frame_size: (H, W) of the source frames.
        out_size: (H', W') of the output grid; default the frame size.
        crop_size: (Hc, Wc) of the crops.
        fg_threshold: minimum foreground probability for a pixel to be owned.
        tasks: dense tasks to produce maps for (default: those in ``outputs``); with no persons
            the maps are still made, empty.
    """
    out_size = out_size or frame_size
    device = next(iter(outputs.values())).device if outputs else matrix.device
    to_frame = _out_to_frame(frame_size, out_size)
    shape = (n_frames, *out_size)
    best = torch.zeros(shape, device=device)
    person = torch.zeros(shape, dtype=torch.int32, device=device)
    tasks = tuple(outputs) if tasks is None else tasks
    part = torch.zeros(shape, dtype=torch.uint8, device=device) if "seg" in tasks else None
    depth = torch.full(shape, float("nan"), device=device) if "depth" in tasks else None
    normal = torch.zeros((*shape, 3), device=device) if "normal" in tasks else None
    slot = torch.zeros(len(frame_index), dtype=torch.int32)
    for i, f in enumerate(frame_index.tolist()):  # slot k of a frame = its k-th person
        slot[i] = int((frame_index[:i] == f).sum()) + 1
    for i in torch.argsort(scores.cpu(), stable=True).tolist():  # ties go to higher scores
        f = int(frame_index[i])
        rect = _rect(matrix[i].cpu(), crop_size, to_frame, out_size)
        if rect is None:
            continue
        y0, y1, x0, x1 = rect
        warped = _warp_all(outputs, i, matrix[i].cpu(), crop_size, to_frame, rect)
        if "seg" in outputs:
            logits = warped["seg"]
            covered = warped["covered"][0] > 0.999
            prob = F.softmax(logits, dim=0)
            fg = torch.where(covered, 1.0 - prob[0], 0.0)
            labels = prob.argmax(0).to(torch.uint8)
        else:
            fg = _box_mask(boxes[i], to_frame, rect).to(device) * (1.0 + float(scores[i]))
            labels = None
        own = (fg > fg_threshold) & (fg >= best[f, y0:y1, x0:x1])
        best[f, y0:y1, x0:x1] = torch.where(own, fg, best[f, y0:y1, x0:x1])
        person[f, y0:y1, x0:x1] = torch.where(own, slot[i].to(device), person[f, y0:y1, x0:x1])
        if part is not None and labels is not None:
            part[f, y0:y1, x0:x1] = torch.where(own, labels, part[f, y0:y1, x0:x1])
        if depth is not None:
            d = warped["depth"][0]
            depth[f, y0:y1, x0:x1] = torch.where(own, d, depth[f, y0:y1, x0:x1])
        if normal is not None:
            n = warped["normal"]
            n = (n / (n.norm(dim=0, keepdim=True) + 1e-5)).permute(1, 2, 0)
            normal[f, y0:y1, x0:x1] = torch.where(own[..., None], n, normal[f, y0:y1, x0:x1])
    if part is not None:  # a pixel the seg head calls background is nobody's
        person = torch.where(part > 0, person, 0)
        if depth is not None:
            depth = torch.where(person > 0, depth, float("nan"))
        if normal is not None:
            normal = torch.where((person > 0)[..., None], normal, 0.0)
    return FrameMaps(person=person, part=part, depth=depth, normal=normal)


def _box_mask(box: Tensor, to_frame: Tensor, rect: tuple[int, int, int, int]) -> Tensor:
    """(rh, rw) bool: output-grid pixels of ``rect`` whose centre lies in ``box`` (frame px)."""
    y0, y1, x0, x1 = rect
    xs = torch.arange(x0, x1, dtype=torch.float64) * to_frame[0, 0] + to_frame[0, 2]
    ys = torch.arange(y0, y1, dtype=torch.float64) * to_frame[1, 1] + to_frame[1, 2]
    b = box.double().cpu()
    inside_x = (xs >= b[0]) & (xs <= b[2])
    inside_y = (ys >= b[1]) & (ys <= b[3])
    return inside_y[:, None] & inside_x[None, :]
