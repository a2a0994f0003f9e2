"""Box arithmetic shared by detection and tracking: IoU, greedy NMS, box checks (numpy).

Two IoU conventions live here, on purpose:

* **pixel-inclusive** (``plus_one=True``): a box ``[x1, y1, x2, y2]`` covers the pixels ``x1..x2``
  inclusive, so its width is ``x2 - x1 + 1``; the intersection width is
  ``max(0, min(x2) - max(x1) + 1)``. This is the convention of the NMS that Sapiens' demos call
  (mmpose's ``nms``), so the person filter uses it to keep exactly the boxes the demos keep.
* **continuous** (``plus_one=False``): width ``x2 - x1``, used by the tracker, where boxes are
  points in the plane and a degenerate box has zero area.

All arithmetic is float64, whatever the input dtype, so results do not depend on it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["check_array", "check_boxes", "cxcywh_to_xyxy", "greedy_nms", "pairwise_iou"]


def pairwise_iou(a: npt.ArrayLike, b: npt.ArrayLike, *, plus_one: bool) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``.

    Args:
        a: Boxes ``[x1, y1, x2, y2]``, (N, 4).
        b: Boxes ``[x1, y1, x2, y2]``, (M, 4).
        plus_one: Pixel-inclusive convention (``+1`` on widths and heights) when True,
            continuous otherwise (see the module docstring).

    Returns:
        (N, M) float64 IoU; 0 where the union is empty.
    """
    a64 = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b64 = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    one = 1.0 if plus_one else 0.0
    area_a = (a64[:, 2] - a64[:, 0] + one) * (a64[:, 3] - a64[:, 1] + one)
    area_b = (b64[:, 2] - b64[:, 0] + one) * (b64[:, 3] - b64[:, 1] + one)
    lo = np.maximum(a64[:, None, :2], b64[None, :, :2])
    hi = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    wh = np.clip(hi - lo + one, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0.0, inter / union, 0.0)
    return iou


def greedy_nms(boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_thr: float) -> np.ndarray:
    """Greedy non-maximum suppression with pixel-inclusive (``+1``) areas.

    Repeatedly keeps the highest-scoring remaining box and drops every remaining box whose IoU
    with it is **greater** than ``iou_thr`` (a box at exactly the threshold survives), as
    mmpose's ``nms`` does. Ties in score are broken by position: the earlier box wins (a stable
    sort, so the result is deterministic).

    Args:
        boxes: Boxes ``[x1, y1, x2, y2]``, (N, 4).
        scores: Scores, (N,).
        iou_thr: Suppression threshold on the pixel-inclusive IoU.

    Returns:
        Indices of the kept boxes into the inputs, (K,) int64, in decreasing score order.
    """
    boxes64 = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        iou = pairwise_iou(boxes64[best : best + 1], boxes64[rest], plus_one=True)[0]
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def check_boxes(
    name: str, boxes: npt.ArrayLike, *, strict: bool, error: type[ValueError] = ValueError
) -> np.ndarray:
    """Check an (N, 4) array of ``[x1, y1, x2, y2]`` boxes and return it as float32.

    Args:
        name: What the boxes are, for the message (e.g. ``"boxes for source index 12"``).
        boxes: Anything numpy turns into an (N, 4) array; N may be 0.
        strict: Require ``x2 > x1`` and ``y2 > y1`` when True, ``>=`` otherwise.
        error: Exception type to raise, a :class:`ValueError` subclass.

    Returns:
        The boxes as a new (N, 4) float32 array.

    Raises:
        ValueError: (of type ``error``) On another shape, non-finite values or inverted corners;
            the message names the first offending row.
    """
    arr = np.asarray(boxes)
    if arr.ndim != 2 or arr.shape[1] != 4:
        msg = f"{name}: expected shape (N, 4) of [x1, y1, x2, y2], got {arr.shape}"
        raise error(msg)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        msg = f"{name}: expected a real-valued array, got dtype {arr.dtype}"
        raise error(msg)
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        msg = f"{name}: expected finite coordinates, got {arr[row].tolist()} in row {row}"
        raise error(msg)
    size = arr[:, 2:] - arr[:, :2]
    inverted = (size <= 0).any(axis=1) if strict else (size < 0).any(axis=1)
    if inverted.any():
        row = int(np.flatnonzero(inverted)[0])
        rel = ">" if strict else ">="
        msg = f"{name}: expected x2 {rel} x1 and y2 {rel} y1, got {arr[row].tolist()} in row {row}"
        raise error(msg)
    return arr


def cxcywh_to_xyxy(boxes: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Normalised ``(cx, cy, w, h)`` boxes to ``[x1, y1, x2, y2]`` pixels, clipped to the image.

    Args:
        boxes: (..., 4) centre and size as fractions of the image size.
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        (..., 4) float32 pixel boxes inside ``[0, width] x [0, height]``.
    """
    b = np.asarray(boxes, dtype=np.float64)
    scale = np.array([width, height, width, height], np.float64)
    half = b[..., 2:] / 2
    xyxy = np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1) * scale
    return np.clip(xyxy, 0.0, scale).astype(np.float32)


def check_array(
    name: str,
    value: object,
    dtype: type[np.generic],
    tail: tuple[int, ...],
    *,
    error: type[ValueError] = ValueError,
) -> None:
    """Raise ``error`` unless ``value`` is an ndarray of ``dtype`` with shape ``(N, *tail)``.

    Args:
        name: Field name for the message.
        value: The value to check.
        dtype: Required numpy dtype (exact).
        tail: Required sizes of the dimensions after the first.
        error: Exception type to raise, a :class:`ValueError` subclass.
    """
    if not isinstance(value, np.ndarray):
        msg = f"{name}: expected a numpy array, got {type(value).__name__}"
        raise error(msg)
    if value.dtype != dtype:
        msg = f"{name}: expected dtype {np.dtype(dtype)}, got {value.dtype}"
        raise error(msg)
    if value.ndim != 1 + len(tail) or value.shape[1:] != tail:
        wanted = "(N" + "".join(f", {t}" for t in tail) + (")" if tail else ",)")
        msg = f"{name}: expected shape {wanted}, got {value.shape}"
        raise error(msg)
