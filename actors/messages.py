"""Messages that cross actor boundaries: frozen dataclasses of numpy arrays aligned on axis 0.

Payloads are numpy arrays (shared zero-copy by Ray's object store, read-only on arrival); every
array in a batch has the same length B and is checked when the batch is created. The video
facts that ride on a batch (:class:`~media.VideoInfo`) are defined by ``media`` and re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media import TimeSource, VideoInfo

__all__ = ["FrameBatch", "PersonBatch", "TimeSource", "VideoInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameBatch:
    """Up to ``batch_size`` decoded frames of one job, in decode order.

    Args:
        job_id: the job these frames belong to.
        batch_index: position of this batch among the batches of one ``batches()`` call.
        frames: (B, H, W, 3) uint8 RGB, C-contiguous.
        source_index: (B,) int64 decode-order index of each frame (0 = first decoded frame).
        pts: (B,) int64 presentation timestamp in ``info.time_base`` units, -1 when missing.
        time_s: (B,) float64 seconds since the first frame (see ``VideoInfo.time_source``).
        is_last: True on the final batch of the call; it may be empty (B = 0) only when no
            frame was selected at all.
        n_corrupt: frames or packets found corrupt since the previous batch (selected or not).
        info: the video facts, set on the first batch (``batch_index == 0``) only.
        corrupt: (B,) bool, True for a selected slot whose frame was corrupt or failed to
            decode (its pixels are black; it gets a store row with status ``corrupt`` and no
            persons); None: all False.
    """

    job_id: str
    batch_index: int
    frames: np.ndarray
    source_index: np.ndarray
    pts: np.ndarray
    time_s: np.ndarray
    is_last: bool
    n_corrupt: int = 0
    info: VideoInfo | None = None
    corrupt: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not self.job_id:
            msg = f"FrameBatch.job_id: expected a non-empty str, got {self.job_id!r}"
            raise ValueError(msg)
        for name in ("batch_index", "n_corrupt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                msg = f"FrameBatch.{name}: expected an int >= 0, got {value!r}"
                raise ValueError(msg)
        _check_array("frames", self.frames, np.uint8, 4)
        if self.frames.shape[-1] != 3 or not self.frames.flags.c_contiguous:
            msg = (
                "FrameBatch.frames: expected a C-contiguous (B, H, W, 3) array, got shape "
                f"{self.frames.shape}, c_contiguous={self.frames.flags.c_contiguous}"
            )
            raise ValueError(msg)
        n = self.frames.shape[0]
        if self.corrupt is None:
            object.__setattr__(self, "corrupt", np.zeros(n, dtype=bool))
        columns = (("source_index", np.int64), ("pts", np.int64), ("time_s", np.float64))
        for name, dtype in (*columns, ("corrupt", np.bool_)):
            array = getattr(self, name)
            _check_array(name, array, dtype, 1)
            if array.shape[0] != n:
                msg = f"FrameBatch.{name}: expected shape ({n},) to match frames, got {array.shape}"
                raise ValueError(msg)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonBatch:
    """The persons of one :class:`FrameBatch`, grouped by frame, in the order the person
    stage found them within a frame: every detection, tracked or not (track id -1).

    Args:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in frame pixels.
        scores: (N,) float32 detector confidence.
        frame: (N,) int64 row of the person's frame in the batch, non-decreasing.
        track_id: (N,) int64 track id, stable across the job's batches; -1 for a detection
            the tracker gave no track (``models.track.UNTRACKED``).
        skipped: rows of the batch's frames the person stage left out (more detections than
            the store holds per frame): they have no persons here and go to the store with
            status ``skipped``.
    """

    boxes: np.ndarray
    scores: np.ndarray
    frame: np.ndarray
    track_id: np.ndarray
    skipped: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_array("boxes", self.boxes, np.float32, 2, "PersonBatch")
        n = self.boxes.shape[0]
        if self.boxes.shape[1:] != (4,):
            msg = f"PersonBatch.boxes: expected shape (N, 4), got {self.boxes.shape}"
            raise ValueError(msg)
        for name, dtype in (("scores", np.float32), ("frame", np.int64), ("track_id", np.int64)):
            array = getattr(self, name)
            _check_array(name, array, dtype, 1, "PersonBatch")
            if array.shape[0] != n:
                msg = f"PersonBatch.{name}: expected shape ({n},) to match boxes, got {array.shape}"
                raise ValueError(msg)
        if n and (np.any(np.diff(self.frame) < 0) or np.any(self.track_id < -1)):
            msg = "PersonBatch: frame must be non-decreasing and track_id >= -1"
            raise ValueError(msg)

    @classmethod
    def empty(cls) -> PersonBatch:
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros(0, np.float32),
            frame=np.zeros(0, np.int64),
            track_id=np.zeros(0, np.int64),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _check_array(
    name: str, value: object, dtype: type[np.generic], ndim: int, owner: str = "FrameBatch"
) -> None:
    if not isinstance(value, np.ndarray):
        msg = f"{owner}.{name}: expected a numpy array, got {type(value).__name__}"
        raise TypeError(msg)
    if value.dtype != dtype or value.ndim != ndim:
        msg = (
            f"{owner}.{name}: expected a {ndim}-d {np.dtype(dtype)} array, "
            f"got {value.ndim}-d {value.dtype}"
        )
        raise ValueError(msg)
