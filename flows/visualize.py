"""Drawing results onto frames: skeletons, part colours, depth and normal maps (numpy + PIL)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from models.metadata import GOLIATH_SEG_28, KeypointSet, SegClassSet

__all__ = [
    "BANNER_RGB",
    "RANDOM_WEIGHTS_BANNER",
    "banner",
    "banner_height",
    "colorize_depth",
    "colorize_normals",
    "colorize_parts",
    "draw_pose",
    "panel",
]

#: The words on every picture made from random weights (demo, render).
RANDOM_WEIGHTS_BANNER = "random weights: not a prediction"
#: Background of a banner (solid red).
BANNER_RGB = (200, 0, 0)

# Stops of matplotlib's "inferno" colormap at 0, 0.1, ..., 1.0 (sRGB hex values).
_INFERNO_STOPS = np.array(
    [
        [0, 0, 4],
        [22, 11, 57],
        [66, 10, 104],
        [106, 23, 110],
        [147, 38, 103],
        [188, 55, 84],
        [221, 81, 58],
        [243, 120, 25],
        [252, 165, 10],
        [246, 215, 70],
        [252, 255, 164],
    ],
    dtype=np.float32,
)

Uint8Image = NDArray[np.uint8]


def _inferno(v: NDArray[np.floating]) -> Uint8Image:
    """Map values in [0, 1] to RGB by piecewise-linear interpolation of the stops."""
    pos = np.clip(v, 0.0, 1.0) * (len(_INFERNO_STOPS) - 1)
    lo = np.floor(pos).astype(np.int64).clip(0, len(_INFERNO_STOPS) - 2)
    t = (pos - lo)[..., None]
    rgb = _INFERNO_STOPS[lo] * (1 - t) + _INFERNO_STOPS[lo + 1] * t
    return rgb.round().astype(np.uint8)


def colorize_parts(
    labels: NDArray[np.integer],
    alpha_on: Uint8Image | None = None,
    alpha: float = 0.5,
    classes: SegClassSet = GOLIATH_SEG_28,
) -> Uint8Image:
    """(H, W) part labels -> RGB with the official palette of ``classes`` (Sapiens' 28 or
    Sapiens2's 29), optionally blended over an image."""
    palette = np.asarray(classes.palette, dtype=np.uint8)
    rgb = palette[np.clip(labels, 0, len(palette) - 1)]
    if alpha_on is None:
        return rgb
    fg = (labels > 0)[..., None]
    blend = alpha_on * (1 - alpha) + rgb * alpha
    return np.where(fg, blend, alpha_on).astype(np.uint8)


def colorize_depth(
    depth: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
) -> Uint8Image:
    """Relative depth (H, W) -> inferno RGB, near = bright; outside ``mask`` gray 100."""
    mask = np.isfinite(depth) if mask is None else mask & np.isfinite(depth)
    out = np.full((*depth.shape, 3), 100, dtype=np.uint8)
    if mask.any():
        d = depth[mask]
        lo, hi = float(d.min()), float(d.max())
        out[mask] = _inferno(1.0 - (d - lo) / max(hi - lo, 1e-6))
    return out


def colorize_normals(
    normals: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
) -> Uint8Image:
    """Unit normals (H, W, 3) -> RGB via (n + 1) / 2; outside ``mask`` black."""
    rgb = ((np.nan_to_num(normals) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    if mask is not None:
        rgb[~mask] = 0
    return rgb


def draw_pose(
    image: Uint8Image,
    keypoints: NDArray[np.floating],
    scores: NDArray[np.floating],
    kset: KeypointSet,
    *,
    threshold: float = 0.3,
    radius: int = 3,
) -> Uint8Image:
    """Draw skeletons of P persons, keypoints (P, K, 2) with scores (P, K), onto an RGB image."""
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    for kp, sc in zip(keypoints, scores, strict=True):
        ok = sc > threshold
        for (a, b), color in zip(kset.skeleton, kset.link_colors, strict=True):
            if ok[a] and ok[b]:
                draw.line([tuple(kp[a]), tuple(kp[b])], fill=tuple(color), width=2)
        for i in np.flatnonzero(ok):
            x, y = kp[i]
            draw.ellipse(
                [x - radius, y - radius, x + radius, y + radius], fill=tuple(kset.point_colors[i])
            )
    return np.asarray(canvas)


def banner_height(image_height: int) -> int:
    """Rows of the band :func:`banner` draws on an image ``image_height`` rows high."""
    return min(image_height, max(16, round(image_height / 12)))


def banner(image: Uint8Image, text: str) -> Uint8Image:
    """``image`` with a band across its top (:func:`banner_height` rows): ``text`` in white on
    :data:`BANNER_RGB`, repeated along the band, so no crop of a wide panel loses it."""
    rows = banner_height(image.shape[0])
    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([0, 0, image.shape[1] - 1, rows - 1], fill=BANNER_RGB)
    font = ImageFont.load_default(size=max(8, rows * 3 // 4))
    step = int(draw.textlength(text + "    ", font=font))
    for x in range(4, image.shape[1], max(step, 1)):
        draw.text((x, rows // 2), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.asarray(canvas)


def panel(images: Sequence[Uint8Image], *, height: int = 360) -> Uint8Image:
    """Resize RGB images to a common height and put them side by side."""
    tiles = []
    for img in images:
        h, w = img.shape[:2]
        pil = Image.fromarray(img).resize(
            (max(1, round(w * height / h)), height), Image.Resampling.BILINEAR
        )
        tiles.append(np.asarray(pil))
    return np.concatenate(tiles, axis=1)
