"""Composition of frame maps from per-person patches, against an independent reference.

The reference below is the contract's rule written pixel by pixel in plain Python (it shares
no code with storage.compose): for each output pixel, walk the persons in ascending score and
apply the ownership test, then clear person/depth/normal where the rule says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from storage import InvalidValueError, PersonPatches, compose_frame_maps

SOURCE = (12, 16)  # (H, W) of the source frame


def _nearest(patch: np.ndarray, box: np.ndarray, sx: float, sy: float) -> Any:
    """The patch pixel nearest to source point (sx, sy), or None outside the patch."""
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    j = math.floor((sx - x0 + 0.5) * w / (x1 - x0))
    i = math.floor((sy - y0 + 0.5) * h / (y1 - y0))
    if 0 <= i < h and 0 <= j < w:
        return patch[i, j]
    return None


def reference(
    patches: PersonPatches,
    box_xyxy: np.ndarray,
    score: np.ndarray,
    out_size: tuple[int, int],
    source_size: tuple[int, int] = SOURCE,
) -> dict[str, np.ndarray]:
    """The contract's composition, one output pixel at a time."""
    oh, ow = out_size
    sh, sw = source_size
    seg = patches.part_patch is not None
    order = sorted(range(len(score)), key=lambda k: float(score[k]))  # sorted() is stable
    part = np.zeros((oh, ow), np.uint8)
    person = np.zeros((oh, ow), np.uint16)
    depth = np.full((oh, ow), np.nan, np.float32)
    normal = np.zeros((oh, ow, 3), np.float32)
    pointmap = np.full((oh, ow, 3), np.nan, np.float32)
    for y in range(oh):
        for x in range(ow):
            sx = (x + 0.5) * sw / ow - 0.5
            sy = (y + 0.5) * sh / oh - 0.5
            best, owner = 0.0, None
            for k in order:
                box = patches.patch_box[k]
                if seg:
                    v = _nearest(patches.fg_patch[k], box, sx, sy)
                    fg = 0.0 if v is None else int(v) / 255
                else:
                    bx0, by0, bx1, by1 = (float(c) for c in box_xyxy[k])
                    inside = bx0 <= sx <= bx1 and by0 <= sy <= by1
                    fg = 1.0 + float(score[k]) if inside else 0.0
                if fg > 0.5 and fg >= best:
                    best, owner = fg, k
            if owner is None:
                continue
            box = patches.patch_box[owner]
            label = int(_nearest(patches.part_patch[owner], box, sx, sy)) if seg else 1
            if label == 0:
                continue  # person, depth and normal stay empty where the part is background
            if seg:
                part[y, x] = label
            person[y, x] = owner + 1
            if patches.depth_patch is not None:
                d = _nearest(patches.depth_patch[owner], box, sx, sy)
                depth[y, x] = np.nan if d is None else d
            if patches.normal_patch is not None:
                n = _nearest(patches.normal_patch[owner], box, sx, sy)
                normal[y, x] = 0.0 if n is None else n
            if patches.pointmap_patch is not None:
                xyz = _nearest(patches.pointmap_patch[owner], box, sx, sy)
                pointmap[y, x] = np.nan if xyz is None else xyz
    return {"part": part, "person": person, "depth": depth, "normal": normal, "pointmap": pointmap}


def _unit(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def three_persons(seg: bool = True) -> tuple[PersonPatches, np.ndarray, np.ndarray]:
    """Three overlapping persons on a 12 x 16 frame, with patches at other resolutions than
    their boxes, equal scores (0 and 2), equal foreground in overlaps, background labels under
    high foreground, and foreground 127 / 255, just below 0.5 (not enough)."""
    rng = np.random.default_rng(7)
    patch_box = np.array([[1, 1, 9, 10], [5, 3, 14, 12], [3, 0, 11, 6]], np.int32)
    box_xyxy = np.array([[0.6, 0.8, 8.2, 9.5], [4.5, 2.7, 13.1, 11.0], [2.9, 0.0, 10.4, 5.2]])
    score = np.array([0.7, 0.9, 0.7], np.float32)
    sizes = [(9, 8), (5, 4), (6, 8)]  # seg/normal sizes: box res, coarser, box res
    part, fg, depth, normal, pointmap = [], [], [], [], []
    for k, (h, w) in enumerate(sizes):
        labels = rng.integers(1, 28, (h, w)).astype(np.uint8)
        labels[0, :] = 0  # a background row under foreground
        part.append(labels)
        level = rng.choice(np.array([128, 200, 255, 127], np.uint8), (h, w))
        level[:, 0] = 200  # the same value in every person's first column: ties
        fg.append(level)
        dh, dw = (h * 2 - 1, w + 3) if k != 1 else (3, 2)  # depth at yet other sizes
        depth.append(rng.uniform(1, 5, (dh, dw)).astype(np.float32))
        normal.append(_unit(rng, h, w))
        ph, pw = (h + 1, w - 1) if k != 2 else (2, 3)  # pointmap at yet other sizes
        pointmap.append(rng.uniform(-3, 3, (ph, pw, 3)).astype(np.float32))
    patches = PersonPatches(
        patch_box=patch_box,
        part_patch=tuple(part) if seg else None,
        fg_patch=tuple(fg) if seg else None,
        depth_patch=tuple(depth),
        normal_patch=tuple(normal),
        pointmap_patch=tuple(pointmap),
        pointmap_scale=np.array([0.5, 1.0, 2.0], np.float32),
    )
    return patches, box_xyxy, score


def assert_maps_equal(got: Any, want: dict[str, np.ndarray], seg: bool = True) -> None:
    if seg:
        assert np.array_equal(got.part, want["part"])
        assert np.array_equal(got.person, want["person"])
    else:
        assert got.part is None
    assert np.array_equal(got.depth, want["depth"], equal_nan=True)
    assert np.array_equal(got.normal, want["normal"])
    assert np.array_equal(got.pointmap, want["pointmap"], equal_nan=True)


@pytest.mark.parametrize("out_size", [SOURCE, (5, 7), (24, 32), (9, 16)])
def test_three_overlapping_persons_with_seg(out_size: tuple[int, int]) -> None:
    patches, box, score = three_persons()
    got = compose_frame_maps(
        patches, box_xyxy=box, score=score, source_size=SOURCE, out_size=out_size
    )
    want = reference(patches, box, score, out_size)
    assert_maps_equal(got, want)
    assert got.part.dtype == np.uint8 and got.person.dtype == np.uint16
    assert got.depth.dtype == np.float32 and got.normal.shape == (*out_size, 3)
    assert got.pointmap.dtype == np.float32 and got.pointmap.shape == (*out_size, 3)
    if out_size == SOURCE:  # every person owns something, and ties occurred
        assert set(np.unique(got.person)) == {0, 1, 2, 3}


def test_ties_go_to_the_later_of_equal_scores() -> None:
    """Two persons with equal scores and equal foreground on the same pixels: the later one
    (frame position) owns them; then a higher score wins an equal foreground."""
    one = np.full((4, 4), 200, np.uint8)
    labels = np.full((4, 4), 5, np.uint8)
    box = np.array([[0, 0, 4, 4], [0, 0, 4, 4]], np.int32)
    patches = PersonPatches(patch_box=box, part_patch=(labels, labels + 1), fg_patch=(one, one))
    common = {"box_xyxy": box.astype(np.float32), "source_size": (4, 4), "out_size": (4, 4)}
    same = compose_frame_maps(patches, score=np.array([0.5, 0.5], np.float32), **common)
    assert np.all(same.person == 2) and np.all(same.part == 6)
    first_higher = compose_frame_maps(patches, score=np.array([0.6, 0.5], np.float32), **common)
    assert np.all(first_higher.person == 1) and np.all(first_higher.part == 5)


@pytest.mark.parametrize("out_size", [SOURCE, (5, 7)])
def test_without_seg_boxes_decide(out_size: tuple[int, int]) -> None:
    patches, box, score = three_persons(seg=False)
    got = compose_frame_maps(
        patches, box_xyxy=box, score=score, source_size=SOURCE, out_size=out_size
    )
    assert_maps_equal(got, reference(patches, box, score, out_size), seg=False)
    ys = (np.arange(out_size[0]) + 0.5) * SOURCE[0] / out_size[0] - 0.5
    xs = (np.arange(out_size[1]) + 0.5) * SOURCE[1] / out_size[1] - 0.5
    in_top = ((ys >= box[1, 1]) & (ys <= box[1, 3]))[:, None] & (
        (xs >= box[1, 0]) & (xs <= box[1, 2])
    )[None, :]
    assert in_top.any() and np.all(got.person[in_top] == 2)  # the top score wins its box
    assert np.all(np.isnan(got.depth[got.person == 0]))


def test_without_seg_box_reaching_past_the_patch() -> None:
    """A box edge between pixel centres: at a finer output grid some centres lie in the box
    but outside the patch's rectangle; they are owned, with no depth or normal there."""
    rng = np.random.default_rng(3)
    patches = PersonPatches(
        patch_box=np.array([[3, 0, 7, 4]], np.int32),
        depth_patch=(rng.uniform(1, 2, (4, 4)).astype(np.float32),),
        normal_patch=(_unit(rng, 2, 4),),
        pointmap_patch=(rng.uniform(1, 2, (3, 4, 3)).astype(np.float32),),
        pointmap_scale=np.array([1.5], np.float32),
    )
    box, score = np.array([[2.2, 0.0, 6.9, 3.0]], np.float32), np.array([0.5], np.float32)
    got = compose_frame_maps(
        patches, box_xyxy=box, score=score, source_size=(4, 10), out_size=(4, 20)
    )
    want = reference(patches, box, score, (4, 20), source_size=(4, 10))
    assert_maps_equal(got, want, seg=False)
    edge = (got.person == 1) & np.isnan(got.depth)
    assert edge[:, 5].all() and edge[:, 14].all() and not edge[:, 6:14].any()
    assert not got.normal[edge].any()
    assert np.isnan(got.pointmap[edge]).all()
    assert not np.isnan(got.pointmap[(got.person == 1) & ~edge]).any()


@pytest.mark.parametrize("seed", range(6))
def test_random_frames_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = int(rng.integers(0, 5))
    boxes, patch_box, part, fg, depth = [], [], [], [], []
    for _ in range(p):
        bx0, by0 = rng.uniform(0, 12), rng.uniform(0, 8)
        bx1, by1 = bx0 + rng.uniform(0.5, 8), by0 + rng.uniform(0.5, 6)
        x0, y0 = math.ceil(bx0), math.ceil(by0)
        x1, y1 = (
            min(16, max(x0 + 1, math.floor(bx1) + 1)),
            min(12, max(y0 + 1, math.floor(by1) + 1)),
        )
        boxes.append((bx0, by0, bx1, by1))
        patch_box.append((x0, y0, x1, y1))
        h, w = int(rng.integers(1, y1 - y0 + 1)), int(rng.integers(1, x1 - x0 + 1))
        part.append(rng.integers(0, 4, (h, w)).astype(np.uint8))
        fg.append(rng.choice(np.array([0, 127, 128, 255], np.uint8), (h, w)))
        depth.append(rng.uniform(1, 2, (max(1, h // 2), w)).astype(np.float32))
    patches = PersonPatches(
        patch_box=np.array(patch_box, np.int32).reshape(p, 4),
        part_patch=tuple(part),
        fg_patch=tuple(fg),
        depth_patch=tuple(depth),
    )
    score = rng.choice(np.array([0.3, 0.6], np.float32), p)
    box = np.array(boxes, np.float32).reshape(p, 4)
    for out_size in (SOURCE, (7, 5)):
        got = compose_frame_maps(
            patches, box_xyxy=box, score=score, source_size=SOURCE, out_size=out_size
        )
        want = reference(patches, box, score, out_size)
        assert np.array_equal(got.part, want["part"])
        assert np.array_equal(got.person, want["person"])
        assert np.array_equal(got.depth, want["depth"], equal_nan=True)
        assert got.normal is None


def test_pointmap_by_hand() -> None:
    """Two persons on a 2 x 4 frame: person 1 (higher score) wins the overlap where its
    foreground is high; the owner's xyz comes from the nearest pixel of its own pointmap patch
    (person 0's has one row and three columns on a 3-pixel box); NaN where nobody owns the
    pixel (person 0's background label at (1, 2), where person 1's foreground is 0)."""
    a = np.array([[[1, 1, 1], [2, 2, 2], [3, 3, 3]]], np.float32)  # (1, 3, 3)
    b = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 10.0  # (2, 2, 3)
    patches = PersonPatches(
        patch_box=np.array([[0, 0, 3, 2], [2, 0, 4, 2]], np.int32),
        part_patch=(np.array([[1, 1, 1], [1, 1, 0]], np.uint8), np.full((2, 2), 2, np.uint8)),
        fg_patch=(np.full((2, 3), 255, np.uint8), np.array([[255, 255], [0, 255]], np.uint8)),
        pointmap_patch=(a, b),
        pointmap_scale=np.array([1.0, 2.0], np.float32),
    )
    got = compose_frame_maps(
        patches,
        box_xyxy=np.array([[0, 0, 2, 1], [2, 0, 3, 1]], np.float32),
        score=np.array([0.4, 0.8], np.float32),
        source_size=(2, 4),
        out_size=(2, 4),
    )
    nan = [np.nan] * 3
    want = np.array(
        [[a[0, 0], a[0, 1], b[0, 0], b[0, 1]], [a[0, 0], a[0, 1], nan, b[1, 1]]], np.float32
    )
    assert got.person.tolist() == [[1, 1, 2, 2], [1, 1, 0, 2]]
    assert np.array_equal(got.pointmap, want, equal_nan=True)
    assert got.depth is None and got.normal is None
    half = compose_frame_maps(
        patches,
        box_xyxy=np.array([[0, 0, 2, 1], [2, 0, 3, 1]], np.float32),
        score=np.array([0.4, 0.8], np.float32),
        source_size=(2, 4),
        out_size=(1, 2),  # centres at source x = 0.5 (person 0's) and 2.5 (person 1's), y = 0.5
    )
    assert np.array_equal(half.pointmap, np.array([[a[0, 1], b[1, 1]]]), equal_nan=True)


def test_no_persons_gives_empty_maps() -> None:
    empty = PersonPatches(
        patch_box=np.zeros((0, 4), np.int32), part_patch=(), fg_patch=(), depth_patch=()
    )
    got = compose_frame_maps(
        empty, box_xyxy=np.zeros((0, 4)), score=np.zeros(0), source_size=SOURCE, out_size=(3, 4)
    )
    assert got.part.tolist() == [[0] * 4] * 3 and not got.person.any()
    assert np.isnan(got.depth).all() and got.pointmap is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"out_size": (0, 4)}, r"out_size: expected \(height, width\)"),
        ({"source_size": (12,)}, "source_size: expected"),
        ({"score": np.zeros(2)}, "expected 3 boxes and scores"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    patches, box, score = three_persons()
    args = {"box_xyxy": box, "score": score, "source_size": SOURCE, "out_size": SOURCE, **kwargs}
    with pytest.raises(InvalidValueError, match=match):
        compose_frame_maps(patches, **args)
