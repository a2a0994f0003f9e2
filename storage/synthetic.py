"""Deterministic synthetic `FrameResult`s for tests, benchmarks and examples.

Persons are upright ellipses: part labels in horizontal bands split left/right, a smooth
ellipsoid depth bump with small noise, and the ellipsoid's surface normals with small noise,
so compression sees data shaped like real dense predictions (smooth inside a person, constant
outside). Keypoints lie inside each person's box at sub-pixel positions. The pointmap is the
depth seen through a pinhole camera (focal length 1.2 times the larger source side, principal
point at the source's centre): z = depth, x and y from the pixel's source position.

For a per-person spec (``patch_size`` set), the dense results are per-person patches instead:
each person's box holds the same kind of ellipse, with depth and pointmap at box resolution
(capped at the patch_size) and seg and normals at half that, as Sapiens' heads differ in output
size. The pointmap patch is raw, as the model gives it: metric xyz times a per-person scale s
drawn from 0.5 .. 2 (``pointmap_scale``).

Example:
    >>> from storage.schema import StoreSpec
    >>> spec = StoreSpec.for_source(32, 48, num_keypoints=17)
    >>> r = synthetic_frame(spec, 3, n_persons=2)
    >>> r.index, r.num_persons, r.part.shape, r.keypoints_xy.shape
    (3, 2, (32, 48), (2, 17, 2))
    >>> spec = StoreSpec.for_source(32, 48, tasks=("seg", "depth"), patch_size=(16, 12))
    >>> r = synthetic_frame(spec, 3, n_persons=2)
    >>> r.tasks, len(r.part_patch), r.depth_patch[0].dtype
    (('seg', 'depth'), 2, dtype('float16'))
    >>> spec = StoreSpec.for_source(32, 48, tasks=("pointmap",), patch_size=(16, 12))
    >>> r = synthetic_frame(spec, 3, n_persons=2)
    >>> r.pointmap_patch[0].shape[2], r.pointmap_patch[0].dtype, r.pointmap_scale.shape
    (3, dtype('float16'), (2,))
"""

from __future__ import annotations

import numpy as np

from storage.frame import FrameResult
from storage.schema import NORMAL_SCALE, StoreSpec

__all__ = ["synthetic_frame"]


def _person_geometry(
    rng: np.random.Generator, height: int, width: int, n: int
) -> list[tuple[float, float, float, float]]:
    """Return (cx, cy, half_width, half_height) of n persons in output pixels."""
    out = []
    for _ in range(n):
        ay = rng.uniform(0.12, 0.3) * height
        ax = ay * rng.uniform(0.3, 0.45)
        cx = rng.uniform(ax, max(ax + 1, width - ax))
        cy = rng.uniform(ay, max(ay + 1, height - ay))
        out.append((cx, cy, ax, ay))
    return out


def _pinhole(
    z: np.ndarray, xs: np.ndarray, ys: np.ndarray, source_hw: tuple[int, int]
) -> np.ndarray:
    """(h, w, 3) float32 camera-space x, y, z of depths ``z`` (h, w) seen at source pixel
    centres ``xs`` (w,) and ``ys`` (h,) (pixel j's centre at x = j) by the module's camera."""
    sh, sw = source_hw
    focal = 1.2 * max(sh, sw)
    x = (xs[None, :] - (sw - 1) / 2) * z / focal
    y = (ys[:, None] - (sh - 1) / 2) * z / focal
    return np.stack([x, y, z], axis=-1).astype(np.float32)


def _blank_maps(h: int, w: int) -> dict[str, np.ndarray]:
    return {
        "part": np.zeros((h, w), np.uint8),
        "person": np.zeros((h, w), np.uint16),
        "depth": np.full((h, w), np.nan, np.float32),
        "normal": np.zeros((h, w, 3), np.float32),
    }


def _draw_person(
    rng: np.random.Generator,
    maps: dict[str, np.ndarray],
    k: int,
    geometry: tuple[float, float, float, float],
) -> None:
    """Paint person ``k`` (an upright ellipse) into the part, person, depth and normal maps."""
    h, w = maps["part"].shape
    cx, cy, ax, ay = geometry
    y0, y1 = max(0, int(cy - ay)), min(h, int(cy + ay) + 1)
    x0, x1 = max(0, int(cx - ax)), min(w, int(cx + ax) + 1)
    win = (slice(y0, y1), slice(x0, x1))
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    u, v = (xx - cx) / ax, (yy - cy) / ay
    r2 = u * u + v * v
    inside = r2 < 1.0
    maps["person"][win][inside] = k + 1
    band = np.clip(((v + 1.0) * 6.5).astype(np.int32), 0, 12)
    maps["part"][win][inside] = (1 + band * 2 + (u > 0))[inside].astype(np.uint8)
    z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    noise = rng.normal(0.0, 0.002, size=z.shape).astype(np.float32)
    maps["depth"][win][inside] = (rng.uniform(2.0, 8.0) - 0.3 * z + noise)[inside]
    n = np.stack([u, v, z + 0.05], axis=-1) + rng.normal(0.0, 0.01, size=(*z.shape, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    maps["normal"][win][inside] = n[inside]


def synthetic_frame(
    spec: StoreSpec,
    index: int,
    *,
    n_persons: int = 3,
    seed: int = 0,
    fps: float = 25.0,
) -> FrameResult:
    """Return a deterministic frame for ``spec`` (maps at the output size).

    Args:
        spec: The store spec (tasks, K, output and source size).
        index: Frame index; also mixed into the random seed.
        n_persons: Persons in the frame.
        seed: Base seed; the same (seed, index) always gives the same frame.
        fps: Frame rate used for pts (1/90000 time base) and time_s.

    Returns:
        A validated FrameResult with exactly the spec's tasks.
    """
    rng = np.random.default_rng([seed, index])
    if spec.per_person:
        return _synthetic_per_person(spec, rng, index, n_persons, fps)
    return _synthetic_maps(spec, rng, index, n_persons, fps)


def _synthetic_maps(
    spec: StoreSpec, rng: np.random.Generator, index: int, n_persons: int, fps: float
) -> FrameResult:
    """A frame of frame maps at the output size (see the module doc)."""
    h, w = spec.height, spec.width
    sy, sx = spec.source_height / h, spec.source_width / w
    maps = _blank_maps(h, w)
    boxes = np.zeros((n_persons, 4), np.float32)
    kps = np.zeros((n_persons, spec.num_keypoints, 2), np.float32)
    # Later persons are drawn over earlier ones (they are nearer the camera).
    for k, geometry in enumerate(_person_geometry(rng, h, w, n_persons)):
        _draw_person(rng, maps, k, geometry)
        cx, cy, ax, ay = geometry
        boxes[k] = ((cx - ax) * sx, (cy - ay) * sy, (cx + ax) * sx, (cy + ay) * sy)
        kps[k] = rng.uniform(boxes[k, :2], boxes[k, 2:], (spec.num_keypoints, 2))
    pose, seg = spec.has("pose"), spec.has("seg")
    scores = rng.uniform(0, 1, (n_persons, spec.num_keypoints)).astype(np.float32)
    xs = (np.arange(w) + 0.5) * sx - 0.5  # output pixel centres in source pixels
    ys = (np.arange(h) + 0.5) * sy - 0.5
    pointmap = _pinhole(maps["depth"], xs, ys, (spec.source_height, spec.source_width))
    return FrameResult(
        index=index,
        source_index=index,
        pts=round(index * 90000 / fps),
        time_s=index / fps,
        track_id=np.arange(n_persons, dtype=np.int64) + 100,
        box_xyxy=boxes,
        score=rng.uniform(0.3, 1.0, n_persons).astype(np.float32),
        keypoints_xy=kps if pose else None,
        keypoint_score=scores if pose else None,
        part=maps["part"] if seg else None,
        person_map=maps["person"] if seg else None,
        depth=maps["depth"] if spec.has("depth") else None,
        normal=maps["normal"] if spec.has("normal") else None,
        pointmap=pointmap if spec.has("pointmap") else None,
    )


def _ellipse(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, r2) of an (h, w) grid: -1..1 across the box, r2 = u*u + v*v."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (u + 0.5) * 2 / w - 1
    v = (v + 0.5) * 2 / h - 1
    return u, v, u * u + v * v


def _person_patches(rng: np.random.Generator, depth_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """One person's patches: depth at ``depth_hw``, seg and normals at half of it."""
    dh, dw = depth_hw
    u, v, r2 = _ellipse(max(1, dh // 2), max(1, dw // 2))
    band = np.clip(((v + 1.0) * 6.5).astype(np.int32), 0, 12)
    # Foreground fades out across the ellipse's rim; labels stop a little inside it, so some
    # foreground pixels are background-labelled (the reader leaves them unowned).
    part = np.where(r2 < 0.9, 1 + band * 2 + (u > 0), 0).astype(np.uint8)
    fg = np.rint(np.clip((1.2 - r2) / 0.4, 0.0, 1.0) * 255).astype(np.uint8)
    z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    n = np.stack([u, v, z + 0.05], axis=-1) + rng.normal(0.0, 0.01, size=(*z.shape, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    _, _, dr2 = _ellipse(dh, dw)
    dz = np.sqrt(np.clip(1.0 - dr2, 0.0, 1.0))
    depth = rng.uniform(2.0, 8.0) - 0.3 * dz + rng.normal(0.0, 0.002, size=dz.shape)
    scale = np.float32(np.abs(depth).max())
    return {
        "part": part,
        "fg": fg,
        "z": depth,
        "depth": (depth / scale).astype(np.float16),
        "scale": np.array(scale, np.float32),
        "normal": np.rint(n * NORMAL_SCALE).astype(np.int8),
    }


def _patch_box(
    spec: StoreSpec, geometry: tuple[float, float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A person's float32 detection box and int32 patch box (the source pixels whose centres
    lie in the box), from its ellipse (cx, cy, half width, half height) in source pixels."""
    sh, sw = spec.source_height, spec.source_width
    cx, cy, ax, ay = geometry
    box = np.array((cx - ax, cy - ay, cx + ax, cy + ay), np.float32)
    box = np.clip(box, 0.0, [sw - 1, sh - 1, sw - 1, sh - 1]).astype(np.float32)
    x0, y0 = int(np.ceil(box[0])), int(np.ceil(box[1]))
    x1, y1 = int(np.floor(box[2])) + 1, int(np.floor(box[3])) + 1
    return box, np.array((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)), np.int32)


def _raw_pointmap(spec: StoreSpec, z: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    """A person's raw pointmap patch: the metric xyz of its depth patch ``z`` (on ``box``)
    times ``scale``, as float16."""
    h, w = z.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    xs = x0 - 0.5 + (np.arange(w) + 0.5) * (x1 - x0) / w
    ys = y0 - 0.5 + (np.arange(h) + 0.5) * (y1 - y0) / h
    metric = _pinhole(z, xs, ys, (spec.source_height, spec.source_width))
    return (metric * np.float32(scale)).astype(np.float16)


def _synthetic_per_person(
    spec: StoreSpec, rng: np.random.Generator, index: int, n_persons: int, fps: float
) -> FrameResult:
    """A frame of per-person patches for a spec with ``patch_size`` (see the module doc)."""
    assert spec.patch_size is not None
    boxes = np.zeros((n_persons, 4), np.float32)
    patch_box = np.zeros((n_persons, 4), np.int32)
    people = []
    geometry = _person_geometry(rng, spec.source_height, spec.source_width, n_persons)
    for k, person in enumerate(geometry):
        boxes[k], patch_box[k] = _patch_box(spec, person)
        x0, y0, x1, y1 = patch_box[k].tolist()
        depth_hw = (min(spec.patch_size[0], y1 - y0), min(spec.patch_size[1], x1 - x0))
        people.append(_person_patches(rng, depth_hw))
    kps = rng.uniform(boxes[:, None, :2], boxes[:, None, 2:], (n_persons, spec.num_keypoints, 2))
    scores = rng.uniform(0, 1, (n_persons, spec.num_keypoints)).astype(np.float32)
    score = rng.uniform(0.3, 1.0, n_persons).astype(np.float32)
    s = rng.uniform(0.5, 2.0, n_persons).astype(np.float32)  # drawn last: nothing else moves
    pose, seg = spec.has("pose"), spec.has("seg")

    def each(name: str, on: bool) -> tuple[np.ndarray, ...] | None:
        return tuple(p[name] for p in people) if on else None

    depth_scale = np.array([p["scale"] for p in people], np.float32).reshape(n_persons)
    pointmap = tuple(
        _raw_pointmap(spec, p["z"], patch_box[k], float(s[k])) for k, p in enumerate(people)
    )
    on = spec.has("pointmap")
    return FrameResult(
        index=index,
        source_index=index,
        pts=round(index * 90000 / fps),
        time_s=index / fps,
        track_id=np.arange(n_persons, dtype=np.int64) + 100,
        box_xyxy=boxes,
        score=score,
        keypoints_xy=kps.astype(np.float32) if pose else None,
        keypoint_score=scores if pose else None,
        patch_box=patch_box,
        part_patch=each("part", seg),
        fg_patch=each("fg", seg),
        depth_patch=each("depth", spec.has("depth")),
        depth_scale=depth_scale if spec.has("depth") else None,
        normal_patch=each("normal", spec.has("normal")),
        pointmap_patch=pointmap if on else None,
        pointmap_scale=s if on else None,
    )
