"""Compose one frame's maps from its persons' own dense results (schema v2, numpy only).

A per-person store keeps each person's seg, depth, normal and pointmap patches on the person's
box; the frame maps (part labels, owning person, depth, normals, pointmap) are composed when
they are read, at any size. The rule is that of the pipeline's own compositing
(models/_persons.py):

* Output pixel (y', x') of an (H', W') grid has its centre at source x = (x' + 0.5) * W / W'
  - 0.5 (y likewise). Its nearest pixel in a patch of shape (h, w) on the rectangle (x0, y0,
  x1, y1) is j = floor((x - x0 + 0.5) * w / (x1 - x0)) (i likewise), inside iff 0 <= j < w and
  0 <= i < h. (Computed in float64, in that order.)
* Persons are visited in ascending detection score (stable, so of equal scores the later
  person comes later); ``best`` starts at 0. With seg, a person's candidate value is its
  foreground probability fg = fg_patch / 255 (0 outside its patch); without seg it is 1 + score
  where the pixel centre lies in the detection box (bounds inclusive), else 0. The person owns
  the pixel iff fg > 0.5 and fg >= best (so on equal fg the later person wins); then best = fg,
  person = k + 1 (k = its position in the frame), part = its label, depth, normal and pointmap =
  its values at the nearest pixel of its depth, normal and pointmap patches (each at its own
  size; none outside the patch: NaN depth, zero normal, NaN pointmap xyz).
* Afterwards, with seg, person = 0 where part == 0; depth is NaN, normal 0 and pointmap NaN
  where person == 0.

Example:
    >>> import numpy as np
    >>> from storage.results import PersonPatches
    >>> patches = PersonPatches(
    ...     patch_box=np.array([[0, 0, 4, 2]], np.int32),
    ...     part_patch=(np.array([[0, 3], [5, 5]], np.uint8),),
    ...     fg_patch=(np.array([[255, 255], [255, 10]], np.uint8),),
    ... )
    >>> maps = compose_frame_maps(patches, box_xyxy=np.array([[0, 0, 3, 1]], np.float32),
    ...                           score=np.array([0.9], np.float32), source_size=(2, 4),
    ...                           out_size=(2, 4))
    >>> maps.part.tolist(), maps.person.tolist()
    ([[0, 0, 3, 3], [5, 5, 0, 0]], [[0, 0, 1, 1], [1, 1, 0, 0]])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from storage.errors import InvalidValueError
from storage.results import PersonPatches

__all__ = ["ComposedMaps", "compose_frame_maps"]

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ComposedMaps:
    """One frame's maps, as a frame-map store's ``frame(i)`` gives them.

    Attributes:
        person: (H', W') uint16 owning person, 0 = none, k = person k-1 of the frame (with seg,
            only where the part label is not background).
        part: (H', W') uint8 part labels, or None without seg.
        depth: (H', W') float32 relative depth, NaN where no person, or None.
        normal: (H', W', 3) float32 unit normals, 0 where no person, or None.
        pointmap: (H', W', 3) float32 metric x, y, z, NaN where no person, or None.
    """

    person: Array
    part: Array | None = None
    depth: Array | None = None
    normal: Array | None = None
    pointmap: Array | None = None


def _check_size(name: str, size: Any) -> tuple[int, int]:
    ok = isinstance(size, tuple | list) and len(size) == 2
    if not ok or not all(isinstance(v, int | np.integer) and v >= 1 for v in size):
        msg = f"{name}: expected (height, width), two ints >= 1, got {size!r}"
        raise InvalidValueError(msg)
    return int(size[0]), int(size[1])


def _axis(centres: Array, lo: int, hi: int, n: int) -> tuple[slice, Array]:
    """Output positions inside a patch of ``n`` pixels on ``[lo, hi)`` (a contiguous run, the
    centres being ascending) and the patch pixel nearest to each."""
    j = np.floor((centres - lo + 0.5) * n / (hi - lo))
    inside = np.flatnonzero((j >= 0) & (j < n))
    if inside.size == 0:
        return slice(0, 0), np.zeros(0, np.intp)
    run = slice(int(inside[0]), int(inside[-1]) + 1)
    return run, j[run].astype(np.intp)


def _sample(patch: Array, ys: Array, xs: Array, box: Array) -> tuple[Array, Array]:
    """Nearest values of ``patch`` (on ``box``) at source centres ``ys`` x ``xs``, and where
    those centres lie inside it."""
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    i = np.floor((ys - y0 + 0.5) * h / (y1 - y0))
    j = np.floor((xs - x0 + 0.5) * w / (x1 - x0))
    valid = ((i >= 0) & (i < h))[:, None] & ((j >= 0) & (j < w))[None, :]
    ii = np.clip(i, 0, h - 1).astype(np.intp)
    jj = np.clip(j, 0, w - 1).astype(np.intp)
    return patch[np.ix_(ii, jj)], valid


def _inclusive(centres: Array, lo: float, hi: float) -> slice:
    """The run of ascending ``centres`` with lo <= c <= hi."""
    inside = np.flatnonzero((centres >= lo) & (centres <= hi))
    return slice(0, 0) if inside.size == 0 else slice(int(inside[0]), int(inside[-1]) + 1)


def compose_frame_maps(
    patches: PersonPatches,
    *,
    box_xyxy: npt.ArrayLike,
    score: npt.ArrayLike,
    source_size: tuple[int, int],
    out_size: tuple[int, int],
) -> ComposedMaps:
    """Compose one frame's maps from its persons' patches (the rule is in the module doc).

    Args:
        patches: The frame's persons' patches (decoded: depth scaled, normals as floats,
            pointmap metric).
        box_xyxy: (P, 4) detection boxes in source pixels (used without seg).
        score: (P,) detection scores: the order in which persons are laid down.
        source_size: (H, W) of the source frame (the pixels of ``patch_box``).
        out_size: (H', W') of the maps to make, e.g. the store's output size.

    Returns:
        The maps of the tasks the patches hold (``person`` always).

    Raises:
        InvalidValueError: If a size is not two positive ints or the persons do not align.
    """
    boxes, scores = _per_person(len(patches), box_xyxy, score)
    ys, xs = _centres(source_size, out_size)
    oh, ow = len(ys), len(xs)
    best = np.zeros((oh, ow), np.float64)
    person = np.zeros((oh, ow), np.uint16)
    seg = patches.part_patch is not None and patches.fg_patch is not None
    part = np.zeros((oh, ow), np.uint8) if seg else None
    sampled = _sampled_maps(patches, oh, ow)
    for k in np.argsort(scores, kind="stable").tolist():
        rows, cols, fg, labels = _candidate(patches, k, ys, xs, boxes[k], scores[k])
        region = best[rows, cols]
        own = (fg > 0.5) & (fg >= region)
        if not own.any():
            continue
        region[own] = np.broadcast_to(fg, own.shape)[own]
        person[rows, cols][own] = k + 1
        if part is not None and labels is not None:
            part[rows, cols][own] = labels[own]
        for values, out, empty in sampled.values():
            got, valid = _sample(values[k], ys[rows], xs[cols], patches.patch_box[k])
            inside = valid if got.ndim == 2 else valid[..., None]
            out[rows, cols][own] = np.where(inside, got, empty)[own]
    return _finish(person, part, sampled)


def _finish(
    person: Array, part: Array | None, sampled: dict[str, tuple[tuple[Array, ...], Array, float]]
) -> ComposedMaps:
    """The last step of the rule: with seg, no person where the part is background; the
    sampled maps empty where there is no person."""
    if part is not None:
        person[part == 0] = 0
    for _, out, empty in sampled.values():
        out[person == 0] = empty
    maps = {name: out for name, (_, out, _) in sampled.items()}
    return ComposedMaps(person=person, part=part, **maps)


def _per_person(p: int, box_xyxy: npt.ArrayLike, score: npt.ArrayLike) -> tuple[Array, Array]:
    """(P, 4) boxes and (P,) scores as float64, checked to be one per person."""
    boxes = np.asarray(box_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(score, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != p or scores.shape[0] != p:
        msg = f"expected {p} boxes and scores (one per patch), got {boxes.shape[0]}, {len(scores)}"
        raise InvalidValueError(msg)
    return boxes, scores


def _centres(source_size: Any, out_size: Any) -> tuple[Array, Array]:
    """Source-pixel centres (y, x) of the output grid's rows and columns."""
    sh, sw = _check_size("source_size", source_size)
    oh, ow = _check_size("out_size", out_size)
    return (np.arange(oh) + 0.5) * sh / oh - 0.5, (np.arange(ow) + 0.5) * sw / ow - 0.5


def _sampled_maps(
    patches: PersonPatches, oh: int, ow: int
) -> dict[str, tuple[tuple[Array, ...], Array, float]]:
    """The maps taken from the owner's nearest patch pixel: name -> (the persons' patches,
    the (H', W'[, 3]) float32 map, its value where there is none)."""
    nan = float("nan")
    fields = (
        ("depth", patches.depth_patch, (), nan),
        ("normal", patches.normal_patch, (3,), 0.0),
        ("pointmap", patches.pointmap_patch, (3,), nan),
    )
    return {
        name: (values, np.full((oh, ow, *tail), empty, np.float32), empty)
        for name, values, tail, empty in fields
        if values is not None
    }


def _candidate(
    patches: PersonPatches, k: int, ys: Array, xs: Array, box_xyxy: Array, score: float
) -> tuple[slice, slice, Array | float, Array | None]:
    """Person ``k``'s claim: the output rows and columns it may own, its candidate value there
    (foreground with seg, else 1 + score inside its detection box) and its labels (seg)."""
    if patches.part_patch is not None and patches.fg_patch is not None:
        box = patches.patch_box[k]
        h, w = patches.part_patch[k].shape
        rows, ri = _axis(ys, int(box[1]), int(box[3]), h)
        cols, ci = _axis(xs, int(box[0]), int(box[2]), w)
        fg = patches.fg_patch[k][np.ix_(ri, ci)] / 255.0
        return rows, cols, fg, patches.part_patch[k][np.ix_(ri, ci)]
    rows = _inclusive(ys, box_xyxy[1], box_xyxy[3])
    cols = _inclusive(xs, box_xyxy[0], box_xyxy[2])
    return rows, cols, 1.0 + score, None
