"""Per-person patches: geometry, resolution cap, stored dtypes and packing.

The references below compute crop geometry by hand (box centre, padded scale with the 3:4
aspect, the UDP warp and the head-map pixel convention) and do not use models.preprocess or
models.composite.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from models.analyze import decode_outputs
from models.preprocess import crop_persons

CROP = (64, 48)


def _map_coord(
    x: float, y: float, box: list[float], map_hw: tuple[int, int]
) -> tuple[float, float]:
    """Head-map pixel (u, v) seen at frame pixel (x, y) by the crop of ``box`` (reference)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = (box[2] - box[0]) * 1.25, (box[3] - box[1]) * 1.25
    aspect = CROP[1] / CROP[0]
    sw, sh = (w, w / aspect) if w > h * aspect else (h * aspect, h)
    xc = (x - cx + 0.5 * sw) * (CROP[1] - 1) / sw  # UDP: box edges -> first/last pixel centres
    yc = (y - cy + 0.5 * sh) * (CROP[0] - 1) / sh
    # the map covers the crop as an align_corners=False resize would
    u = (xc + 0.5) * map_hw[1] / CROP[1] - 0.5
    v = (yc + 0.5) * map_hw[0] / CROP[0] - 0.5
    return u, v


def _run(outputs: dict[str, torch.Tensor], boxes: list[list[float]], frame_hw=(120, 160)):
    frames = torch.zeros(1, 3, *frame_hw)
    b = torch.tensor(boxes).reshape(-1, 4)
    crop = crop_persons(frames, torch.zeros(len(boxes), dtype=torch.long), b, out_size=CROP)
    tasks = tuple(outputs)
    return decode_outputs(
        outputs,
        center=crop.center,
        scale=crop.scale,
        matrix=crop.matrix,
        boxes=b,
        frame_size=frame_hw,
        crop_size=CROP,
        tasks=tasks,
        num_keypoints=0,
    ).patches


def test_depth_patch_samples_the_head_at_each_box_pixel() -> None:
    box = [30.3, 20.0, 55.7, 70.9]
    mh, mw = CROP  # a full-resolution depth head: the patch is at box resolution
    v, u = torch.meshgrid(torch.arange(mh).float(), torch.arange(mw).float(), indexing="ij")
    depth = (0.5 * u + 0.25 * v + 3.0)[None, None]  # linear: bilinear sampling is exact
    p = _run({"depth": depth}, [box])
    assert p is not None and p.depth is not None and p.depth_scale is not None
    # pixels whose centres lie in the box: x 31..55, y 20..70
    assert p.box.tolist() == [[31, 20, 56, 71]]
    (patch,) = p.split("depth")
    assert patch.dtype == np.float16 and patch.shape == (51, 25)
    got = patch.astype(np.float32) * p.depth_scale[0]
    for i, j in [(0, 0), (10, 7), (50, 24), (25, 12)]:
        u_, v_ = _map_coord(31 + j, 20 + i, box, (mh, mw))
        want = 0.5 * u_ + 0.25 * v_ + 3.0
        assert math.isclose(got[i, j], want, rel_tol=2e-3), (i, j, got[i, j], want)
    assert math.isclose(float(p.depth_scale[0]), float(np.abs(got).max()), rel_tol=1e-3)


def test_patch_is_capped_at_the_heads_resolution_over_the_box() -> None:
    box = [10.0, 10.0, 40.0, 110.0]  # 100 px tall; its crop covers 125 px of frame height
    seg = torch.zeros(1, 28, 16, 12)  # a quarter-resolution head: 16 px over 125
    p = _run({"seg": seg}, [box])
    assert p is not None
    h, w = p.sizes["seg"][0].tolist()
    assert h == math.ceil(101 * 16 / 125)  # 101 pixel rows have their centre in the box
    assert w == math.ceil(31 * 12 / (125 * 0.75))
    assert p.split("part")[0].shape == (h, w)


def test_seg_labels_and_foreground_in_stored_dtypes() -> None:
    logits = torch.full((2, 28, 64, 48), -10.0)
    logits[:, 0] = 0.0
    logits[0, 7] = 2.0
    logits[1, 3] = -1.0
    p = _run({"seg": logits}, [[10.0, 10, 40, 60], [60.0, 30, 100, 100]])
    assert p is not None and p.part is not None and p.fg is not None
    part0, part1 = p.split("part")
    fg0, fg1 = p.split("fg")
    others = 26 * math.exp(-10.0)
    p_bg0 = 1.0 / (1.0 + math.exp(2.0) + others)
    p_bg1 = 1.0 / (1.0 + math.exp(-1.0) + others)
    assert (part0 == 7).all() and (part1 == 0).all()  # person 1's background wins
    assert (fg0 == round(255 * (1 - p_bg0))).all() and (fg1 == round(255 * (1 - p_bg1))).all()
    assert part0.dtype == np.uint8 and fg0.dtype == np.uint8


def test_normals_are_unit_int8_and_persons_are_packed_in_order() -> None:
    normal = torch.zeros(3, 3, 32, 24)
    normal[0, 2] = -2.0
    normal[1, 0] = 5.0
    normal[2, 1] = 0.5
    boxes = [[5.0, 5, 30, 45], [50.0, 10, 90, 100], [100.0, 0, 160, 120]]
    p = _run({"normal": normal}, boxes)
    assert p is not None and p.normal is not None
    got = p.split("normal")
    assert [g.shape[:2] for g in got] == [tuple(s) for s in p.sizes["normal"].tolist()]
    assert (got[0] == [0, 0, -127]).all() and (got[1] == [127, 0, 0]).all()
    assert (got[2] == [0, 127, 0]).all()
    assert p.normal.shape == (sum(h * w for h, w in p.sizes["normal"].tolist()), 3)


def test_no_persons_give_empty_patches() -> None:
    p = _run({"seg": torch.zeros(0, 28, 8, 6), "depth": torch.zeros(0, 1, 8, 6)}, [])
    assert p is not None and len(p) == 0 and p.part is not None and p.part.size == 0
    assert p.depth_scale is not None and p.depth_scale.shape == (0,)
