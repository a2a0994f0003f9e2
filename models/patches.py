"""Per-person dense results, reduced on the device to what the store keeps.

Each person's seg, depth and normal outputs are resampled onto the person's own box (the
frame pixels whose centres lie in the detection box), at the box's resolution but never finer
than the head's own output (nor the crop) over the box, and converted to the stored dtypes there:

* ``part`` uint8 labels and ``fg`` uint8 ``round(255 * (1 - p_background))`` from the seg logits;
* ``depth`` float16, divided by the person's own ``depth_scale`` (the largest |depth| in its
  patch, so every person's values use the whole float16 range);
* ``normal`` int8 ``round(127 * n)`` of the unit normals;
* ``pointmap`` float16 xyz as the head gives it (Sapiens2: canonical camera space), with the
  person's ``pointmap_scale`` (the model's scale output for its crop): metric xyz is
  pointmap / pointmap_scale.

One ``grid_sample`` per head resolution serves every person of a call, and the patches are
packed into one flat buffer per field by a gather whose indices are computed on the host from
the boxes, so nothing waits on the device until the single copy of each buffer to the host.
Frame maps are composed from patches on read (``storage.compose_frame_maps``).

Patch geometry: pixel (i, j) of an (h, w) patch on the rectangle (x0, y0, x1, y1) (x1, y1
exclusive) has its centre at frame x = x0 - 0.5 + (j + 0.5) * (x1 - x0) / w, and likewise y.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.composite import frame_to_map_matrix
from models.transfer import to_host

__all__ = ["PATCH_TASKS", "PersonPatches", "patch_boxes", "patch_sizes", "person_patches"]

PATCH_TASKS = ("seg", "depth", "normal", "pointmap")
FLOAT16_MAX = 65504.0
NORMAL_SCALE = 127
FG_SCALE = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonPatches:
    """Per-person patches of N persons, packed, on the CPU.

    Attributes:
        box: (N, 4) int32 ``x0, y0, x1, y1`` frame-pixel rectangle of each person's patches.
        sizes: ``{task: (N, 2) int64 (h, w)}`` patch size of each person, per dense task.
        part, fg: flat uint8 (sum h*w,) seg labels and foreground probabilities, or None.
        depth: flat float16 (sum h*w,) depth / depth_scale, or None.
        depth_scale: (N,) float32, or None.
        normal: (sum h*w, 3) int8, or None.
        pointmap: (sum h*w, 3) float16 raw xyz, or None.
        pointmap_scale: (N,) float32 scale of each person's crop (metric = raw / scale).
    """

    box: np.ndarray
    sizes: Mapping[str, np.ndarray]
    part: np.ndarray | None = None
    fg: np.ndarray | None = None
    depth: np.ndarray | None = None
    depth_scale: np.ndarray | None = None
    normal: np.ndarray | None = None
    pointmap: np.ndarray | None = None
    pointmap_scale: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.box.shape[0])

    def split(self, field: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Per-person (h, w[, 3]) views of one packed field (``part``, ``fg``, ``depth``,
        ``normal`` or ``pointmap``), for the persons ``rows`` (default: all)."""
        flat = getattr(self, field)
        task = {"part": "seg", "fg": "seg"}.get(field, field)
        hw = np.asarray(self.sizes[task])
        ends = np.cumsum(hw[:, 0] * hw[:, 1])
        starts = ends - hw[:, 0] * hw[:, 1]
        picked = range(len(self)) if rows is None else np.flatnonzero(rows)
        tail = flat.shape[1:]
        return tuple(
            flat[starts[n] : ends[n]].reshape(int(hw[n, 0]), int(hw[n, 1]), *tail) for n in picked
        )

    def nbytes(self) -> int:
        """Bytes of every array (what crosses process boundaries)."""
        arrays = [self.box, *self.sizes.values()]
        arrays += [self.part, self.fg, self.depth, self.depth_scale, self.normal]
        arrays += [self.pointmap, self.pointmap_scale]
        return sum(int(a.nbytes) for a in arrays if a is not None)


def patch_boxes(boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) int32 pixel rectangles of float xyxy boxes: the pixels whose centres lie in the
    box (bounds inclusive), clipped to the frame, and at least one pixel."""
    h, w = frame_size
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.ceil(b[:, 0]), 0, w - 1)
    y0 = np.clip(np.ceil(b[:, 1]), 0, h - 1)
    x1 = np.clip(np.floor(b[:, 2]) + 1, x0 + 1, w)
    y1 = np.clip(np.floor(b[:, 3]) + 1, y0 + 1, h)
    return np.stack((x0, y0, x1, y1), axis=1).astype(np.int32)


def patch_sizes(rect: np.ndarray, crop_scale: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) int64 (h, w) of patches on ``rect``: one sample per frame pixel, capped at the
    head's resolution over the rectangle (a crop of ``crop_scale`` (w, h) frame pixels is
    seen at ``map_size`` (h, w) head pixels)."""
    rw = (rect[:, 2] - rect[:, 0]).astype(np.float64)
    rh = (rect[:, 3] - rect[:, 1]).astype(np.float64)
    s = np.asarray(crop_scale, dtype=np.float64).reshape(-1, 2)
    w = np.minimum(rw, np.ceil(rw * map_size[1] / s[:, 0]))
    h = np.minimum(rh, np.ceil(rh * map_size[0] / s[:, 1]))
    return np.stack((np.maximum(h, 1), np.maximum(w, 1)), axis=1).astype(np.int64)


def _gather_index(hw: np.ndarray, slot: tuple[int, int]) -> np.ndarray:
    """Flat indices into (N, Hm, Wm) of every pixel [0:h_n, 0:w_n] of every person, in person
    then row-major order (computed on the host, without a loop over persons)."""
    hm, wm = slot
    h, w = hw[:, 0], hw[:, 1]
    owner = np.repeat(np.arange(len(hw)), h)
    row = np.arange(int(h.sum())) - np.repeat(np.cumsum(h) - h, h)
    starts = owner * hm * wm + row * wm
    lengths = w[owner]
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within


def _sample(
    maps: Tensor,
    matrix: Tensor,
    rect: np.ndarray,
    hw: np.ndarray,
    crop_size: tuple[int, int],
) -> tuple[Tensor, tuple[int, int]]:
    """Bilinear samples (N, C, Hm, Wm) of every person's head maps at its patch pixels."""
    device, n = maps.device, maps.shape[0]
    slot = (int(hw[:, 0].max()), int(hw[:, 1].max()))
    f32 = dict(device=device, dtype=torch.float32)
    step = (rect[:, 2:] - rect[:, :2]) / hw[:, ::-1]  # frame px per patch px, (x, y)
    x0 = torch.as_tensor(rect[:, 0] - 0.5, **f32).view(n, 1, 1)
    y0 = torch.as_tensor(rect[:, 1] - 0.5, **f32).view(n, 1, 1)
    sx = torch.as_tensor(step[:, 0], **f32).view(n, 1, 1)
    sy = torch.as_tensor(step[:, 1], **f32).view(n, 1, 1)
    j = torch.arange(slot[1], **f32).view(1, 1, -1) + 0.5
    i = torch.arange(slot[0], **f32).view(1, -1, 1) + 0.5
    x, y = x0 + j * sx, y0 + i * sy  # (N, 1, Wm), (N, Hm, 1)
    map_h, map_w = int(maps.shape[-2]), int(maps.shape[-1])
    m = frame_to_map_matrix(matrix.to(**f32), (map_h, map_w), crop_size)  # axis-aligned
    u = m[:, 0, 0].view(n, 1, 1) * x + m[:, 0, 2].view(n, 1, 1)
    v = m[:, 1, 1].view(n, 1, 1) * y + m[:, 1, 2].view(n, 1, 1)
    gx = (u * (2.0 / max(map_w - 1, 1)) - 1.0).expand(n, slot[0], slot[1])
    gy = (v * (2.0 / max(map_h - 1, 1)) - 1.0).expand(n, slot[0], slot[1])
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(
        maps.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out, slot


def _pack(values: Tensor, hw: np.ndarray, slot: tuple[int, int]) -> np.ndarray:
    """(N, C, Hm, Wm) -> (sum h*w, C) (or (sum h*w,) for C == 1) numpy on the host."""
    n, c = values.shape[:2]
    index = torch.from_numpy(_gather_index(hw, slot)).to(values.device, non_blocking=True)
    flat = values.permute(0, 2, 3, 1).reshape(n * slot[0] * slot[1], c).index_select(0, index)
    out = to_host(flat).numpy()
    return out[:, 0] if c == 1 else out


@torch.inference_mode()
def person_patches(
    outputs: Mapping[str, Tensor],
    *,
    boxes: np.ndarray,
    crop_scale: np.ndarray,
    matrix: Tensor,
    frame_size: tuple[int, int],
    crop_size: tuple[int, int],
    tasks: tuple[str, ...],
) -> PersonPatches:
    """Reduce N persons' raw dense head outputs to per-person patches (see the module doc).

    Args:
        outputs: raw head outputs on the device: ``seg`` (N, classes, h, w) logits, ``depth``
            (N, 1, h, w), ``normal`` (N, 3, h, w), ``pointmap`` (N, 3, h, w) with
            ``pointmap_scale`` (N, 1); at least those in ``tasks``.
        boxes: (N, 4) detection boxes xyxy in frame pixels (host).
        crop_scale: (N, 2) (w, h) frame pixels each crop covers (host).
        matrix: (N, 2, 3) frame px -> crop px warps (``preprocess.CropResult.matrix``).
        frame_size: (H, W) of the frames.
        crop_size: (Hc, Wc) of the crops.
        tasks: the dense tasks to reduce.
    """
    rect = patch_boxes(boxes, frame_size)
    n = len(rect)
    sizes: dict[str, np.ndarray] = {}
    fields: dict[str, np.ndarray] = {}
    for task in (t for t in PATCH_TASKS if t in tasks):
        if n == 0:  # no forward ran: there are no outputs to look at
            sizes[task] = np.zeros((0, 2), np.int64)
            fields.update(_empty(task))
            continue
        raw = outputs[task]
        seen = (min(int(raw.shape[-2]), crop_size[0]), min(int(raw.shape[-1]), crop_size[1]))
        hw = sizes[task] = patch_sizes(rect, crop_scale, seen)
        sampled, slot = _sample(raw, matrix, rect, hw, crop_size)
        if task == "seg":
            prob = torch.softmax(sampled, dim=1)
            fg = torch.round((1.0 - prob[:, :1]) * FG_SCALE).clamp(0, FG_SCALE).to(torch.uint8)
            fields["part"] = _pack(prob.argmax(1, keepdim=True).to(torch.uint8), hw, slot)
            fields["fg"] = _pack(fg, hw, slot)
        elif task == "depth":
            scale = _depth_scale(sampled, hw, slot)
            fields["depth_scale"] = to_host(scale).numpy()
            fields["depth"] = _pack((sampled / scale.view(n, 1, 1, 1)).half(), hw, slot)
        elif task == "pointmap":
            scale = outputs["pointmap_scale"].float().reshape(n)
            fields["pointmap_scale"] = to_host(scale).numpy()
            xyz = sampled.clamp(-FLOAT16_MAX, FLOAT16_MAX).half()
            fields["pointmap"] = _pack(xyz, hw, slot)
        else:
            unit = sampled / (sampled.norm(dim=1, keepdim=True) + 1e-5)
            q = torch.round(unit * NORMAL_SCALE).clamp(-NORMAL_SCALE, NORMAL_SCALE)
            fields["normal"] = _pack(q.to(torch.int8), hw, slot)
    return PersonPatches(box=rect, sizes=sizes, **fields)


def _depth_scale(depth: Tensor, hw: np.ndarray, slot: tuple[int, int]) -> Tensor:
    """(N,) float32: each person's largest |depth| in its patch (1 where that is 0 or not
    finite)."""
    device = depth.device
    rows = torch.arange(slot[0], device=device).view(1, -1, 1)
    cols = torch.arange(slot[1], device=device).view(1, 1, -1)
    h = torch.as_tensor(hw[:, 0], device=device).view(-1, 1, 1)
    w = torch.as_tensor(hw[:, 1], device=device).view(-1, 1, 1)
    inside = (rows < h) & (cols < w)
    peak = torch.where(inside, depth[:, 0].abs(), 0.0).amax(dim=(1, 2))
    return torch.where(torch.isfinite(peak) & (peak > 0), peak, 1.0).float()


def _empty(task: str) -> dict[str, np.ndarray]:
    if task == "seg":
        return {"part": np.zeros(0, np.uint8), "fg": np.zeros(0, np.uint8)}
    if task == "depth":
        return {"depth": np.zeros(0, np.float16), "depth_scale": np.zeros(0, np.float32)}
    if task == "pointmap":
        return {
            "pointmap": np.zeros((0, 3), np.float16),
            "pointmap_scale": np.zeros(0, np.float32),
        }
    return {"normal": np.zeros((0, 3), np.int8)}
