"""Person detection: the :class:`Detections` container, Sapiens' demo filter and three detectors.

A detector maps a batch of frames ``(B, 3, H, W)`` uint8 RGB and their source indices ``(B,)`` to
one :class:`Detections` whose rows are person boxes in frame pixels. Three kinds exist:

* :class:`RTDETRDetector`: kornia's COCO RT-DETR on a downscaled copy of each frame, person class
  only, then :func:`filter_persons` (score > 0.3, greedy NMS at IoU 0.3, as Sapiens' demos do).
* :class:`FullFrameDetector`: the whole frame is one person box (Sapiens-Lite without detector).
* :class:`GivenBoxesDetector`: boxes supplied with the job, looked up by source index.

:func:`build_detector` picks one by name.
"""

from __future__ import annotations

import abc
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from ._boxes import check_array, check_boxes, cxcywh_to_xyxy, greedy_nms
from ._rtdetr import MODEL_NAMES, DetectorWeightsUnavailableError, load_rtdetr
from .errors import ModelError

__all__ = [
    "COCO_PERSON",
    "DETECTOR_DEVICES",
    "MODEL_NAMES",
    "DetectionError",
    "Detections",
    "DetectorKind",
    "DetectorWeightsUnavailableError",
    "FullFrameDetector",
    "GivenBoxesDetector",
    "PersonDetector",
    "RTDETRDetector",
    "build_detector",
    "detector_device",
    "filter_persons",
]

logger = logging.getLogger(__name__)

COCO_PERSON = 0
"""Index of ``person`` among the 80 contiguous COCO labels RT-DETR predicts (category id 1)."""

_NO_BOXES = np.zeros((0, 4), np.float32)

DetectorKind = Literal["rtdetr", "full-frame", "boxes"]


class DetectionError(ModelError, ValueError):
    """Invalid detector input or options: frames, source indices, boxes, arrays."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Detections:
    """Person boxes of a batch of frames, one row per person, arrays aligned on axis 0.

    Attributes:
        boxes_xyxy: (N, 4) float32 ``[x1, y1, x2, y2]`` in frame pixels, finite, x2 >= x1, y2 >= y1.
        scores: (N,) float32 detector confidence, finite.
        frame: (N,) int64 index of the frame within its batch, >= 0.

    Example:
        >>> d = Detections(boxes_xyxy=np.zeros((1, 4), np.float32),
        ...                scores=np.ones(1, np.float32), frame=np.zeros(1, np.int64))
        >>> len(d), len(d.for_frame(1)), len(Detections.concat([d, d]))
        (1, 0, 2)
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    frame: np.ndarray

    def __post_init__(self) -> None:
        check_array("boxes_xyxy", self.boxes_xyxy, np.float32, (4,), error=DetectionError)
        check_array("scores", self.scores, np.float32, (), error=DetectionError)
        check_array("frame", self.frame, np.int64, (), error=DetectionError)
        n = len(self.boxes_xyxy)
        for name in ("scores", "frame"):
            if len(getattr(self, name)) != n:
                msg = f"{name}: expected {n} rows like boxes_xyxy, got {len(getattr(self, name))}"
                raise DetectionError(msg)
        check_boxes("boxes_xyxy", self.boxes_xyxy, strict=False, error=DetectionError)
        if not np.isfinite(self.scores).all():
            msg = (
                f"scores: expected finite values, got {self.scores[~np.isfinite(self.scores)][:3]}"
            )
            raise DetectionError(msg)
        if n and self.frame.min() < 0:
            msg = f"frame: expected indices >= 0, got {int(self.frame.min())}"
            raise DetectionError(msg)

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    @classmethod
    def empty(cls) -> Detections:
        """Detections with no rows."""
        return cls(
            boxes_xyxy=_NO_BOXES.copy(), scores=np.zeros(0, np.float32), frame=np.zeros(0, np.int64)
        )

    def for_frame(self, index: int) -> Detections:
        """The rows of batch frame ``index`` (their ``frame`` column keeps the value ``index``)."""
        keep = self.frame == index
        return Detections(
            boxes_xyxy=self.boxes_xyxy[keep], scores=self.scores[keep], frame=self.frame[keep]
        )

    @classmethod
    def concat(cls, parts: Sequence[Detections]) -> Detections:
        """Rows of ``parts`` one after the other; ``frame`` values are kept as they are."""
        if not parts:
            return cls.empty()
        return cls(
            boxes_xyxy=np.concatenate([p.boxes_xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            frame=np.concatenate([p.frame for p in parts]),
        )


def filter_persons(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, *, score_thr: float = 0.3, nms_iou: float = 0.3
) -> np.ndarray:
    """Sapiens' demo filtering of person boxes: keep ``score > score_thr``, then greedy NMS.

    NMS uses **pixel-inclusive** areas, as the mmpose ``nms`` the demos call: a box
    ``[x1, y1, x2, y2]`` is ``x2 - x1 + 1`` wide and ``y2 - y1 + 1`` high, and so is the overlap.
    A box is dropped when its IoU with a higher-scoring kept box is greater than ``nms_iou``.
    Equal scores keep input order (stable), so the result is deterministic.

    Args:
        boxes: (N, 4) ``[x1, y1, x2, y2]`` (numpy array or CPU tensor).
        scores: (N,) confidences.
        score_thr: Strict lower bound on the score (the demos' ``--bbox-thr``).
        nms_iou: NMS threshold (the demos' ``--nms-thr``).

    Returns:
        (K,) int64 indices of the kept boxes into the inputs, highest score first.

    Raises:
        DetectionError: On misshapen inputs.

    Example:
        >>> filter_persons([[0, 0, 9, 9], [5, 0, 14, 9], [0, 0, 9, 9]], [0.9, 0.8, 0.2]).tolist()
        [0]
    """
    b = np.asarray(boxes, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or s.shape != (len(b),):
        msg = f"boxes, scores: expected shapes (N, 4) and (N,), got {b.shape} and {s.shape}"
        raise DetectionError(msg)
    candidates = np.flatnonzero(s > score_thr)
    return candidates[greedy_nms(b[candidates], s[candidates], nms_iou)]


def _check_batch(frames: Tensor, source_index: Tensor | npt.ArrayLike) -> np.ndarray:
    """Check a detector's inputs and return ``source_index`` as a (B,) int64 numpy array."""
    if not isinstance(frames, Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        msg = f"frames: expected a (B, 3, H, W) uint8 RGB tensor, got {got}"
        raise DetectionError(msg)
    if frames.dtype != torch.uint8:
        msg = f"frames: expected dtype torch.uint8, got {frames.dtype}"
        raise DetectionError(msg)
    src = (
        source_index.cpu().numpy() if isinstance(source_index, Tensor) else np.asarray(source_index)
    )
    if src.shape != (frames.shape[0],) or not np.issubdtype(src.dtype, np.integer):
        msg = f"source_index: expected ({frames.shape[0]},) integers, got {src.shape} {src.dtype}"
        raise DetectionError(msg)
    return src.astype(np.int64)


class PersonDetector(abc.ABC):
    """Frames in, person boxes out. Configured in the constructor, data in the call."""

    @abc.abstractmethod
    def __call__(self, frames: Tensor, source_index: Tensor | npt.ArrayLike) -> Detections:
        """Detect the persons of a batch of frames.

        Args:
            frames: (B, 3, H, W) uint8 RGB frames, on any device.
            source_index: (B,) int64 index of each frame in its source video.

        Returns:
            Detections whose ``frame`` column indexes ``frames`` (0..B-1).

        Raises:
            DetectionError: On misshapen inputs.
        """


class FullFrameDetector(PersonDetector):
    """One box ``[0, 0, W, H]`` with score 1 per frame: the whole frame is the person."""

    def __call__(self, frames: Tensor, source_index: Tensor | npt.ArrayLike) -> Detections:
        """See :meth:`PersonDetector.__call__`."""
        _check_batch(frames, source_index)
        b, _, h, w = frames.shape
        return Detections(
            boxes_xyxy=np.tile(np.array([[0, 0, w, h]], np.float32), (b, 1)),
            scores=np.ones(b, np.float32),
            frame=np.arange(b, dtype=np.int64),
        )


class GivenBoxesDetector(PersonDetector):
    """Boxes supplied with the job, looked up by each frame's source index.

    The boxes are used as given (no filtering, no clipping to the frame), with the score of a
    fifth column or 1; a frame whose source index has no entry gets no boxes.

    Args:
        boxes_by_source_index: Source index -> (n, 4) ``[x1, y1, x2, y2]`` frame-pixel boxes
            with x2 > x1, y2 > y1, finite, or (n, 5) with a score in (0, 1] last; n may be 0.

    Raises:
        DetectionError: On a key that is not an int >= 0, or an invalid box or score (names
            the key and the row).
    """

    def __init__(self, boxes_by_source_index: Mapping[int, npt.ArrayLike]) -> None:
        table: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for key, boxes in boxes_by_source_index.items():
            if isinstance(key, bool) or not isinstance(key, int | np.integer) or key < 0:
                msg = f"boxes_by_source_index: expected int keys >= 0, got {key!r}"
                raise DetectionError(msg)
            table[int(key)] = _given_rows(f"boxes for source index {key}", boxes)
        self._boxes = table

    def __call__(self, frames: Tensor, source_index: Tensor | npt.ArrayLike) -> Detections:
        """See :meth:`PersonDetector.__call__`."""
        src = _check_batch(frames, source_index)
        none = (_NO_BOXES, np.zeros(0, np.float32))
        per_frame = [self._boxes.get(int(s), none) for s in src]
        counts = [len(p[0]) for p in per_frame]
        if not per_frame:
            return Detections.empty()
        return Detections(
            boxes_xyxy=np.concatenate([p[0] for p in per_frame]),
            scores=np.concatenate([p[1] for p in per_frame]),
            frame=np.repeat(np.arange(len(src), dtype=np.int64), counts),
        )


def _given_rows(name: str, rows: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) float32 boxes and (n,) float32 scores of given rows ``[x1, y1, x2, y2(, score)]``."""
    if np.size(rows) == 0:  # e.g. [] from a JSON file: a frame with nobody in it
        return _NO_BOXES.copy(), np.zeros(0, np.float32)
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
        msg = f"{name}: expected rows of [x1, y1, x2, y2] or [x1, y1, x2, y2, score], got {e}"
        raise DetectionError(msg) from e
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        msg = f"{name}: expected shape (N, 4) or (N, 5) (a score last), got {arr.shape}"
        raise DetectionError(msg)
    boxes = check_boxes(name, arr[:, :4], strict=True, error=DetectionError)
    scores = arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr))
    bad = np.flatnonzero(~((scores > 0) & (scores <= 1)))
    if bad.size:
        row = int(bad[0])
        msg = f"{name}: expected a score in (0, 1], got {scores[row]} in row {row}"
        raise DetectionError(msg)
    return boxes, scores.astype(np.float32)


class RTDETRDetector(PersonDetector):
    """kornia's COCO RT-DETR, person class only, with Sapiens' demo filtering.

    Each frame is scaled to ``input_size x input_size`` (aspect not kept, bilinear with
    antialiasing, values in [0, 1], no mean/std: RT-DETR's own test pre-processing). The model
    predicts normalised ``(cx, cy, w, h)`` boxes, which map back to frame pixels by multiplying
    with ``(W, H)``, exactly, since the whole frame was scaled. The sigmoid of the person logit
    of each of the 300 queries is its score; then :func:`filter_persons` runs per frame.

    Weights: ``weights`` (a local file) if given, else kornia's download into the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``), else random weights when ``pretrained=False``
    (tests only: the detections are meaningless).

    Args:
        model_name: A kornia RT-DETR name: ``rtdetr_r18vd`` (default), ``rtdetr_r34vd``,
            ``rtdetr_r50vd_m``, ``rtdetr_r50vd``, ``rtdetr_r101vd``.
        input_size: Side of the square model input; a multiple of 32, at least 128.
        weights: Local checkpoint: the published file (``{"ema": {"module": ...}}``, reference
            parameter names) or a state dict with kornia's names.
        pretrained: Download the published COCO weights when ``weights`` is None.
        score_thr: Person score threshold of :func:`filter_persons`.
        nms_iou: NMS threshold of :func:`filter_persons`.
        device: Where the model runs: a torch device, or ``auto``/``cpu``/``cuda`` (see
            :func:`detector_device`); default CPU.
        dtype: Model dtype (default float32).
        download_timeout: Seconds one network wait may stall before kornia retries.

    Raises:
        DetectionError: On a bad ``model_name`` or ``input_size``.
        DetectorWeightsUnavailableError: When the weights are missing and cannot be fetched.
        CheckpointError: When a weights file does not fit the model.
    """

    def __init__(
        self,
        *,
        model_name: str = "rtdetr_r18vd",
        input_size: int = 640,
        weights: str | os.PathLike[str] | None = None,
        pretrained: bool = True,
        score_thr: float = 0.3,
        nms_iou: float = 0.3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        download_timeout: float = 30.0,
    ) -> None:
        if model_name not in MODEL_NAMES:
            msg = f"model_name: expected one of {list(MODEL_NAMES)}, got {model_name!r}"
            raise DetectionError(msg)
        if (
            isinstance(input_size, bool)
            or not isinstance(input_size, int)
            or (input_size < 128 or input_size % 32)
        ):
            msg = f"input_size: expected a multiple of 32 that is >= 128, got {input_size!r}"
            raise DetectionError(msg)
        self.model_name, self.input_size = model_name, input_size
        self.score_thr, self.nms_iou = score_thr, nms_iou
        if isinstance(device, str) and device in DETECTOR_DEVICES:
            device = detector_device(device)  # "auto": CUDA where this process has a GPU
        self._device = torch.device(device if device is not None else "cpu")
        self._dtype = dtype if dtype is not None else torch.float32
        model = load_rtdetr(model_name, weights, pretrained=pretrained, timeout=download_timeout)
        self._model = model.to(device=self._device, dtype=self._dtype).eval()

    @torch.inference_mode()
    def __call__(self, frames: Tensor, source_index: Tensor | npt.ArrayLike) -> Detections:
        """See :meth:`PersonDetector.__call__`."""
        _check_batch(frames, source_index)
        _, _, h, w = frames.shape
        x = frames.to(self._device, non_blocking=True).float().div_(255.0)
        side = (self.input_size, self.input_size)
        x = F.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
        logits, boxes = self._model(x.to(self._dtype))
        scores = logits[..., COCO_PERSON].float().sigmoid().cpu().numpy()
        xyxy = cxcywh_to_xyxy(boxes.float().cpu().numpy(), width=w, height=h)
        parts = []
        for i, (frame_boxes, frame_scores) in enumerate(zip(xyxy, scores, strict=True)):
            keep = filter_persons(
                frame_boxes, frame_scores, score_thr=self.score_thr, nms_iou=self.nms_iou
            )
            parts.append(
                Detections(
                    boxes_xyxy=frame_boxes[keep],
                    scores=frame_scores[keep],
                    frame=np.full(len(keep), i, np.int64),
                )
            )
        detections = Detections.concat(parts)
        logger.debug("rtdetr: %d frames -> %d persons", len(parts), len(detections))
        return detections


_DETECTORS: dict[str, type[PersonDetector]] = {
    "rtdetr": RTDETRDetector,
    "full-frame": FullFrameDetector,
    "boxes": GivenBoxesDetector,
}


DETECTOR_DEVICES = ("auto", "cpu", "cuda")
"""Where a detector with weights runs: ``auto`` is CUDA when this process has a GPU."""


def detector_device(choice: str) -> str:
    """The device a detector set to ``choice`` (one of :data:`DETECTOR_DEVICES`) runs on here.

    Raises:
        DetectionError: For an unknown choice, or ``cuda`` in a process without a GPU.
    """
    if choice not in DETECTOR_DEVICES:
        msg = f"detector device: expected one of {list(DETECTOR_DEVICES)}, got {choice!r}"
        raise DetectionError(msg)
    has_gpu = torch.cuda.is_available()
    if choice == "cuda" and not has_gpu:
        msg = (
            "detector device 'cuda', but the person stage has no GPU: give the cluster GPUs "
            "(the person stage then asks for a share of one) or use 'auto' or 'cpu'"
        )
        raise DetectionError(msg)
    return "cuda" if choice == "cuda" or (choice == "auto" and has_gpu) else "cpu"


def build_detector(kind: DetectorKind, **options: Any) -> PersonDetector:
    """Build the detector ``kind`` from its constructor options.

    Args:
        kind: ``"rtdetr"`` (:class:`RTDETRDetector`), ``"full-frame"``
            (:class:`FullFrameDetector`) or ``"boxes"`` (:class:`GivenBoxesDetector`).
        **options: Keyword arguments of that class's constructor.

    Returns:
        The detector (for ``"rtdetr"`` its weights are loaded here).

    Raises:
        DetectionError: On an unknown kind, or unknown or missing options (lists the valid ones).

    Example:
        >>> build_detector("full-frame")  # doctest: +ELLIPSIS
        <models.detect.FullFrameDetector object at ...>
    """
    cls = _DETECTORS.get(kind)
    if cls is None:
        msg = f"kind: expected one of {sorted(_DETECTORS)}, got {kind!r}"
        raise DetectionError(msg)
    params = {
        name: p
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    unknown = sorted(options.keys() - params.keys())
    missing = sorted(n for n, p in params.items() if p.default is p.empty and n not in options)
    if unknown or missing:
        problems = [
            f"{what} option(s) {names}"
            for what, names in (("unknown", unknown), ("missing", missing))
            if names
        ]
        msg = f"build_detector({kind!r}): {'; '.join(problems)}; valid: {sorted(params)}"
        raise DetectionError(msg)
    return cls(**options)
