"""`FrameResult`: everything the pipeline hands the writer for one frame.

Example:
    >>> import numpy as np
    >>> r = FrameResult(index=0, source_index=0, pts=0, time_s=0.0,
    ...                 track_id=np.zeros(0, np.int64), box_xyxy=np.zeros((0, 4), np.float32),
    ...                 score=np.zeros(0, np.float32))
    >>> r.num_persons, r.tasks
    (0, ())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from storage._frame_checks import check_array as _check_array
from storage._frame_checks import check_patches, normalise_patches
from storage._frame_checks import fail as _fail
from storage.schema import FRAME_STATUS, MAX_PART_CLASSES, FrameStatus, Task

__all__ = ["FrameResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameResult:
    """Results for one frame, validated on creation; arrays must not be mutated afterwards.

    Maps may be at the store's output size or at the source size (the writer downsamples
    those with nearest-neighbour sampling). Keypoints and boxes are in source pixels.

    Dense results come either as frame maps (``part``/``person_map``, ``depth``, ``normal``,
    ``pointmap``: whole-frame mode) or per person (the ``*_patch`` fields with ``patch_box``:
    crop mode, stored in a store whose spec has a ``patch_size``), never both for one task.
    Pixel (i, j) of a patch of shape (h, w) on its box (x0, y0, x1, y1) has its centre at
    source x = x0 - 0.5 + (j + 0.5) * (x1 - x0) / w (y likewise); see docs/schema.md.

    Attributes:
        index: Position of the frame in the store (the decode-order counter), >= 0.
        source_index: Index of the frame in the source video.
        pts: Presentation timestamp in stream time-base units, or None if unknown.
        time_s: Presentation time in seconds.
        track_id: (P,) integer track ids, >= 0; -1 for a detected person without a track
            (the tracker matched it to none and it was too weak to start one).
        box_xyxy: (P, 4) float boxes in source pixels.
        score: (P,) float detection scores.
        keypoints_xy: (P, K, 2) float keypoints in source pixels, or None if pose is off.
        keypoint_score: (P, K) float keypoint scores, or None if pose is off.
        part: (H, W) uint8 part labels (0 = background), or None if seg is off: 0..27 for
            Sapiens, 0..28 for Sapiens2 (the store's ``num_classes`` decides which it takes).
        person_map: (H, W) uint16 owning person, 0 = none, k = person k-1 of this frame.
        depth: (H, W) float relative depth, NaN off-person, or None if depth is off.
        normal: (H, W, 3) float unit normals, 0 off-person, or None if normals are off.
        pointmap: (H, W, 3) float metric camera-space x, y, z (the model's raw xyz divided by
            its scale), NaN off-person, or None if pointmap is off.
        status: ``ok``, or ``corrupt``/``skipped`` for a selected frame that was not analysed
            (no persons; its time may be unknown, NaN).
        patch_box: (P, 4) int ``x0, y0, x1, y1`` source-pixel rectangle of each person's
            patches (x1, y1 exclusive; 0 <= x0 < x1, 0 <= y0 < y1), present iff a patch is.
        part_patch: P uint8 (h_i, w_i) part labels (as ``part``), with ``fg_patch``, or None.
        fg_patch: P uint8 arrays shaped like ``part_patch``: round(255 * foreground prob.).
        depth_patch: P float16 (h_i, w_i) relative depth divided by ``depth_scale``, or None.
        depth_scale: (P,) float finite scales > 0, present iff ``depth_patch`` is.
        normal_patch: P int8 (h_i, w_i, 3) unit normals as round(n * 127), or None.
        pointmap_patch: P float16 (h_i, w_i, 3) camera-space x, y, z as the model gives them
            (raw: metric xyz times ``pointmap_scale``, not divided), NaN allowed, no inf.
        pointmap_scale: (P,) float finite non-zero scales, the model's scale s of each person's
            crop (metric = raw / s), present iff ``pointmap_patch`` is.
    """

    index: int
    source_index: int
    pts: int | None
    time_s: float
    track_id: npt.NDArray[np.integer[Any]]
    box_xyxy: npt.NDArray[np.floating[Any]]
    score: npt.NDArray[np.floating[Any]]
    keypoints_xy: npt.NDArray[np.floating[Any]] | None = None
    keypoint_score: npt.NDArray[np.floating[Any]] | None = None
    part: npt.NDArray[np.integer[Any]] | None = None
    person_map: npt.NDArray[np.integer[Any]] | None = None
    depth: npt.NDArray[np.floating[Any]] | None = None
    normal: npt.NDArray[np.floating[Any]] | None = None
    pointmap: npt.NDArray[np.floating[Any]] | None = None
    status: FrameStatus = "ok"
    patch_box: npt.NDArray[np.integer[Any]] | None = None
    part_patch: tuple[npt.NDArray[np.uint8], ...] | None = None
    fg_patch: tuple[npt.NDArray[np.uint8], ...] | None = None
    depth_patch: tuple[npt.NDArray[np.float16], ...] | None = None
    depth_scale: npt.NDArray[np.floating[Any]] | None = None
    normal_patch: tuple[npt.NDArray[np.int8], ...] | None = None
    pointmap_patch: tuple[npt.NDArray[np.float16], ...] | None = None
    pointmap_scale: npt.NDArray[np.floating[Any]] | None = None

    def __post_init__(self) -> None:
        normalise_patches(self)
        self._check_scalars()
        self._check_persons()
        self._check_pose()
        self._check_maps()
        check_patches(self)

    @property
    def num_persons(self) -> int:
        """Number of persons P in the frame."""
        return int(self.track_id.shape[0])

    @property
    def tasks(self) -> tuple[Task, ...]:
        """Tasks whose results this frame carries, in canonical order."""
        present: list[Task] = []
        if self.keypoints_xy is not None:
            present.append("pose")
        if self.part is not None or self.part_patch is not None:
            present.append("seg")
        if self.depth is not None or self.depth_patch is not None:
            present.append("depth")
        if self.normal is not None or self.normal_patch is not None:
            present.append("normal")
        if self.pointmap is not None or self.pointmap_patch is not None:
            present.append("pointmap")
        return tuple(present)

    @property
    def patch_tasks(self) -> tuple[Task, ...]:
        """Dense tasks carried per person (as patches), in canonical order."""
        fields: tuple[tuple[Task, Any], ...] = (
            ("seg", self.part_patch),
            ("depth", self.depth_patch),
            ("normal", self.normal_patch),
            ("pointmap", self.pointmap_patch),
        )
        return tuple(t for t, v in fields if v is not None)

    @property
    def map_size(self) -> tuple[int, int] | None:
        """(H, W) of the maps, or None when no map task is present."""
        for m in (self.part, self.depth, self.normal, self.pointmap):
            if m is not None:
                return int(m.shape[0]), int(m.shape[1])
        return None

    def _check_scalars(self) -> None:
        for name in ("index", "source_index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise _fail(self.index, f"{name}: expected an int >= 0, got {value!r}")
        if self.pts is not None and (
            isinstance(self.pts, bool) or not isinstance(self.pts, int | np.integer)
        ):
            raise _fail(self.index, f"pts: expected an int or None, got {self.pts!r}")
        if self.status not in FRAME_STATUS:
            raise _fail(
                self.index, f"status: expected one of {list(FRAME_STATUS)}, got {self.status!r}"
            )
        unknown_time = (
            self.status != "ok" and isinstance(self.time_s, float) and math.isnan(self.time_s)
        )
        if not isinstance(self.time_s, float | int | np.floating) or not (
            math.isfinite(self.time_s) or unknown_time
        ):
            raise _fail(self.index, f"time_s: expected a finite float, got {self.time_s!r}")

    def _check_persons(self) -> None:
        _check_array(self.index, "track_id", self.track_id, (None,), "iu")
        p = self.num_persons
        if p and self.status != "ok":
            raise _fail(self.index, f"a frame with status {self.status!r} has no persons, got {p}")
        _check_array(self.index, "box_xyxy", self.box_xyxy, (p, 4), "f")
        _check_array(self.index, "score", self.score, (p,), "f")
        if p and int(self.track_id.min()) < -1:
            msg = f"track_id: expected ids >= 0 or -1 (untracked), got min {self.track_id.min()}"
            raise _fail(self.index, msg)
        if not (np.isfinite(self.box_xyxy).all() and np.isfinite(self.score).all()):
            raise _fail(self.index, "box_xyxy/score: expected finite values, got NaN or inf")

    def _check_pose(self) -> None:
        if (self.keypoints_xy is None) != (self.keypoint_score is None):
            raise _fail(
                self.index, "keypoints_xy and keypoint_score: expected both or neither, got one"
            )
        if self.keypoints_xy is None or self.keypoint_score is None:
            return
        p = self.num_persons
        _check_array(self.index, "keypoints_xy", self.keypoints_xy, (p, None, 2), "f")
        k = self.keypoints_xy.shape[1]
        _check_array(self.index, "keypoint_score", self.keypoint_score, (p, k), "f")

    def _check_maps(self) -> None:
        if (self.part is None) != (self.person_map is None):
            raise _fail(self.index, "part and person_map: expected both or neither, got one")
        size = self.map_size
        if size is None:
            return
        h, w = size
        if self.part is not None and self.person_map is not None:
            _check_array(self.index, "part", self.part, (h, w), "u")
            _check_array(self.index, "person_map", self.person_map, (h, w), "u")
            if self.part.size and int(self.part.max()) >= MAX_PART_CLASSES:
                msg = f"part: expected labels 0..{MAX_PART_CLASSES - 1}, got {self.part.max()}"
                raise _fail(self.index, msg)
            if self.person_map.size and int(self.person_map.max()) > self.num_persons:
                msg = (
                    f"person_map: expected values 0..{self.num_persons} (P={self.num_persons}), "
                    f"got {self.person_map.max()}"
                )
                raise _fail(self.index, msg)
        if self.depth is not None:
            _check_array(self.index, "depth", self.depth, (h, w), "f")
        if self.normal is not None:
            _check_array(self.index, "normal", self.normal, (h, w, 3), "f")
        if self.pointmap is not None:
            _check_array(self.index, "pointmap", self.pointmap, (h, w, 3), "f")
