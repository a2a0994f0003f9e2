"""Whole-frame dense mode for Sapiens2, following its official demo recipes.

* ``seg``: the frame is resized to the model input without keeping its aspect ratio, by area
  averaging when the width shrinks and bicubically when it grows (cv2's INTER_AREA and
  INTER_CUBIC, chosen by the width alone); the logits are resized bilinearly straight to the
  output grid.
* ``normal``, ``pointmap`` (and ``depth``, the pointmap's metric z): the frame is letterboxed:
  scaled by s = min(W_in / w, H_in / h) to (int(w s), int(h s)) bilinearly and padded with
  black, ``pad_w // 2`` on the left and ``pad_h // 2`` on top. Normals are normalised (norm
  clamped at 1e-8) at network resolution, the padding is cropped off and they are resized
  bilinearly, not renormalised. Pointmaps are divided by the model's scale, cropped, blurred
  (four passes of a 3x3 Gaussian, sigma 0.8, reflected border) when the output grid is larger
  than the cropped map, and resized bilinearly.

All resizes are ``align_corners=False`` without antialiasing. Ownership and the values off the
foreground follow ``models._frame_maps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LETTERBOX_TASKS", "Pad", "letterbox", "sapiens2_frame_outputs", "stretch"]

#: Tasks whose input is letterboxed (the rest is stretched).
LETTERBOX_TASKS = frozenset({"normal", "pointmap", "depth"})
_BLUR_PASSES, _BLUR_SIGMA = 4, 0.8

Pad = tuple[int, int, int, int]
"""(left, top, width, height) of the letterboxed image inside the model input."""
Run = Callable[[Tensor, frozenset[str]], dict[str, Tensor]]


def stretch(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """(F, 3, H, W) uint8 -> (F, 3, h, w) float32 0-255: area averaging when the width
    shrinks, else bicubic (clamped to 0-255, as cv2 saturates)."""
    x = frames.float()
    if size[1] < frames.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 255)


def letterbox(frames: Tensor, size: tuple[int, int]) -> tuple[Tensor, Pad]:
    """(F, 3, H, W) uint8 -> (F, 3, h, w) float32 0-255 letterboxed, and where the image is."""
    (h, w), (fh, fw) = size, frames.shape[-2:]
    s = min(w / fw, h / fh)
    nw, nh = int(fw * s), int(fh * s)
    resized = F.interpolate(frames.float(), size=(nh, nw), mode="bilinear", align_corners=False)
    left, top = (w - nw) // 2, (h - nh) // 2
    out = F.pad(resized, (left, w - nw - left, top, h - nh - top))
    return out, (left, top, nw, nh)


def _crop(maps: Tensor, pad: Pad) -> Tensor:
    left, top, w, h = pad
    return maps[..., top : top + h, left : left + w]


def _resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)


def _blur(maps: Tensor) -> Tensor:
    """One 3x3 Gaussian pass (sigma 0.8) per channel, reflected border."""
    x = torch.arange(3, dtype=torch.float32, device=maps.device) - 1
    k = torch.exp(-(x**2) / (2 * _BLUR_SIGMA**2))
    k = k / k.sum()
    c = maps.shape[1]
    padded = F.pad(maps, (1, 1, 1, 1), mode="reflect")
    rows = F.conv2d(padded, k.view(1, 1, 1, 3).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(rows, k.view(1, 1, 3, 1).repeat(c, 1, 1, 1), groups=c)


def sapiens2_frame_outputs(
    frames: Tensor,
    run: Run,
    normalize: Callable[[Tensor], Tensor],
    *,
    input_size: tuple[int, int],
    tasks: Iterable[str],
    out_size: tuple[int, int],
) -> dict[str, Tensor]:
    """Dense outputs of whole frames on the output grid, by the recipes of the module doc.

    Args:
        frames: (F, 3, H, W) uint8 RGB on the model's device.
        run: ``run(images, tasks)`` -> raw outputs (see ``models.analyze.Forward``).
        normalize: 0-255 images -> model input.
        input_size: (H, W) of the model input.
        tasks: dense tasks: ``seg``, ``normal``, ``pointmap``, ``depth``.
        out_size: (H', W') of the maps.

    Returns:
        ``seg`` (F, classes, H', W') logits, ``normal`` (F, 3, H', W') normals, ``pointmap``
        (F, 3, H', W') metric xyz, ``depth`` (F, 1, H', W') metric z: those of ``tasks``.
    """
    tasks = frozenset(tasks)
    out: dict[str, Tensor] = {}
    if "seg" in tasks:
        raw = run(normalize(stretch(frames, input_size)), frozenset({"seg"}))
        out["seg"] = _resize(raw["seg"], out_size)
    boxed = tasks & LETTERBOX_TASKS
    if not boxed:
        return out
    want = frozenset({"pointmap"} if "depth" in boxed else ()) | (boxed - {"depth"})
    images, pad = letterbox(frames, input_size)
    raw = run(normalize(images), want)
    if "normal" in boxed:
        n = raw["normal"].float()
        n = n / torch.linalg.vector_norm(n, dim=1, keepdim=True).clamp(min=1e-8)
        out["normal"] = _resize(_crop(n, pad), out_size)
    if boxed & {"pointmap", "depth"}:
        metric = _crop(
            raw["pointmap"].float() / raw["pointmap_scale"].float().view(-1, 1, 1, 1), pad
        )
        if out_size[0] > metric.shape[-2] or out_size[1] > metric.shape[-1]:
            for _ in range(_BLUR_PASSES):
                metric = _blur(metric)
        xyz = _resize(metric, out_size)
        if "pointmap" in boxed:
            out["pointmap"] = xyz
        if "depth" in boxed:
            out["depth"] = xyz[:, 2:3]
    return out
