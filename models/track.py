"""Per-job multi-object tracking of person boxes: stable track ids across the frames of a video.

:class:`Tracker` follows ByteTrack's two-stage association:

1. Every track (seen recently or lost) predicts its box at the new frame with a constant-velocity
   model: ``box + velocity * (frame - last_seen)``, velocity in pixels per frame for each of the
   four coordinates (so a growing box keeps growing).
2. High-score detections (``score >= high_score``) are matched to all tracks by IoU.
3. Low-score detections (``low_score <= score < high_score``) are matched, with a stricter IoU,
   to the tracks left over that were matched in the previous update; this keeps a track alive
   through a partial occlusion without letting weak boxes revive lost tracks or start new ones.
4. High-score detections left over with ``score >= new_track_score`` start new tracks; other
   left-over detections get id -1 (:data:`UNTRACKED`): no track, but still persons (the person
   stage keeps them, and the store records them with their score and id -1).
5. Tracks unmatched for more than ``max_age`` frames are removed.

Matching is **greedy** rather than an optimal (Hungarian) assignment, as scipy is not a
dependency: the candidate pairs with IoU >= the stage threshold are taken in decreasing IoU
(ties: lower track row, then lower detection row), each skipped if its track or detection is
taken already. It equals the optimal assignment whenever every person overlaps at most one
prediction well, which the motion model makes the common case; in crowds it can differ.

IoU here is continuous (width ``x2 - x1``; see ``models._boxes``). All arithmetic is float64 and
the whole state round-trips exactly through :meth:`Tracker.state` / :meth:`Tracker.from_state`
(plain ints, floats, strings, lists and dicts: msgpack-able), so a tracker restored mid-video
gives the same ids as one that never stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ._boxes import pairwise_iou
from .detect import Detections
from .errors import ModelError

__all__ = ["STATE_VERSION", "UNTRACKED", "Tracker", "TrackerConfig", "TrackingError"]

logger = logging.getLogger(__name__)

STATE_VERSION = 1
"""Version of the :meth:`Tracker.state` layout; :meth:`Tracker.from_state` accepts only it."""

_TRACK_KEYS = ("id", "box", "velocity", "last_seen", "hits")

UNTRACKED = -1
"""Track id of a detection the tracker gave no track (the store's fill value of track ids)."""


class TrackingError(ModelError, ValueError):
    """Bad tracker configuration, state or call order (e.g. a frame index that goes back)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerConfig:
    """Thresholds of :class:`Tracker`. Defaults follow ByteTrack.

    Args:
        high_score: Detections at or above it take part in the first association stage.
        low_score: Detections below it are ignored (id -1).
        new_track_score: Minimum score of a left-over detection to start a track.
        match_iou: Minimum IoU of a first-stage match (ByteTrack: cost 1 - IoU <= 0.8).
        low_match_iou: Minimum IoU of a second-stage (low-score) match (ByteTrack: 0.5).
        max_age: Frames a track survives unmatched; after more it is removed.
        velocity_momentum: Weight of the newest velocity measurement in the running average.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    new_track_score: float = 0.6
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    max_age: int = 30
    velocity_momentum: float = 0.5

    def __post_init__(self) -> None:
        for name in ("match_iou", "low_match_iou", "velocity_momentum"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                msg = f"TrackerConfig.{name}: expected a value in (0, 1], got {value!r}"
                raise TrackingError(msg)
        if not self.low_score <= self.high_score <= self.new_track_score:
            msg = (
                "TrackerConfig: expected low_score <= high_score <= new_track_score, got "
                f"{self.low_score}, {self.high_score}, {self.new_track_score}"
            )
            raise TrackingError(msg)
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 0:
            msg = f"TrackerConfig.max_age: expected an int >= 0, got {self.max_age!r}"
            raise TrackingError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{name: value}``; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrackerConfig:
        """Build from ``{name: value}``; rejects unknown keys and lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        if unknown := raw.keys() - valid:
            msg = f"TrackerConfig: unknown key(s) {sorted(unknown)}; valid keys: {sorted(valid)}"
            raise TrackingError(msg)
        return cls(**raw)


def _greedy_match(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching on an IoU matrix.

    Args:
        iou: (T, D) IoU of T predicted track boxes with D detections.
        min_iou: Smallest IoU a match may have (> 0).

    Returns:
        ``(rows, cols)``: (M,) int64 matched track rows and detection columns.
    """
    rows, cols = np.nonzero(iou >= min_iou)
    order = np.lexsort((cols, rows, -iou[rows, cols]))
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in taken_rows and c not in taken_cols:
            taken_rows.add(r)
            taken_cols.add(c)
            pairs.append((r, c))
    matched = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return matched[:, 0], matched[:, 1]


class Tracker:
    """Assigns stable track ids to the person boxes of one video, frame after frame.

    Args:
        config: Thresholds; :class:`TrackerConfig` defaults when None.

    Example:
        >>> tracker = Tracker()
        >>> def dets(x):
        ...     return Detections(boxes_xyxy=np.array([[x, 0, x + 10, 20]], np.float32),
        ...                       scores=np.ones(1, np.float32), frame=np.zeros(1, np.int64))
        >>> [tracker.update(dets(x), i).tolist() for i, x in enumerate([0, 2, 4])]
        [[1], [1], [1]]
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self._next_id = 1
        self._last_frame = -1
        self._ids = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4), np.float64)
        self._velocity = np.zeros((0, 4), np.float64)
        self._last_seen = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Number of live tracks (matched within the last ``max_age`` frames)."""
        return len(self._ids)

    @property
    def track_ids(self) -> np.ndarray:
        """(T,) int64 ids of the live tracks, oldest first."""
        return self._ids.copy()

    def update(self, detections: Detections, frame_index: int) -> np.ndarray:
        """Associate the detections of one frame with the tracks and return their ids.

        Args:
            detections: The persons of one frame (their ``frame`` column is not used).
            frame_index: Index of the frame in its video; must increase from call to call
                (gaps are fine: the motion model and ``max_age`` count in frame indices).

        Returns:
            (N,) int64 track id of each detection row, -1 for detections not tracked (low
            score, or unmatched and too weak to start a track). Ids start at 1.

        Raises:
            TrackingError: When ``frame_index`` is not an int above the previous one.
        """
        frame_index = self._check_frame(frame_index)
        cfg = self.config
        boxes = detections.boxes_xyxy.astype(np.float64)
        scores = detections.scores.astype(np.float64)
        self._drop_stale(frame_index)
        iou = pairwise_iou(self._predict(frame_index), boxes, plus_one=False)
        recent = self._last_seen == self._last_frame
        high = np.flatnonzero(scores >= cfg.high_score)
        low = np.flatnonzero((scores >= cfg.low_score) & (scores < cfg.high_score))
        t1, d1 = _greedy_match(iou[:, high], cfg.match_iou)
        left = np.setdiff1d(np.flatnonzero(recent), t1)
        t2, d2 = _greedy_match(iou[np.ix_(left, low)], cfg.low_match_iou)
        tracks = np.concatenate([t1, left[t2]])
        dets = np.concatenate([high[d1], low[d2]])
        self._correct(tracks, boxes[dets], frame_index)
        ids = np.full(len(boxes), UNTRACKED, np.int64)
        ids[dets] = self._ids[tracks]
        fresh = np.setdiff1d(high[scores[high] >= cfg.new_track_score], high[d1])
        ids[fresh] = self._start(boxes[fresh], frame_index)
        self._last_frame = frame_index
        logger.debug(
            "frame %d: %d detections, %d matched, %d new, %d live tracks",
            frame_index,
            len(boxes),
            len(dets),
            len(fresh),
            len(self._ids),
        )
        return ids

    def _check_frame(self, frame_index: int) -> int:
        if isinstance(frame_index, bool) or not isinstance(frame_index, int | np.integer):
            msg = f"frame_index: expected an int, got {type(frame_index).__name__}"
            raise TrackingError(msg)
        if frame_index < 0 or frame_index <= self._last_frame:
            msg = (
                f"frame_index: expected an int > {self._last_frame} (the previous frame index), "
                f"got {frame_index}; to replay frames, restore the state saved before them"
            )
            raise TrackingError(msg)
        return int(frame_index)

    def _drop_stale(self, frame_index: int) -> None:
        keep = frame_index - self._last_seen <= self.config.max_age
        if not keep.all():
            logger.debug("frame %d: removing tracks %s", frame_index, self._ids[~keep].tolist())
            self._select(keep)

    def _select(self, keep: np.ndarray) -> None:
        self._ids, self._boxes = self._ids[keep], self._boxes[keep]
        self._velocity, self._last_seen = self._velocity[keep], self._last_seen[keep]
        self._hits = self._hits[keep]

    def _predict(self, frame_index: int) -> np.ndarray:
        """(T, 4) boxes of the tracks moved to ``frame_index`` at constant velocity."""
        gap = (frame_index - self._last_seen).astype(np.float64)
        return self._boxes + self._velocity * gap[:, None]

    def _correct(self, tracks: np.ndarray, observed: np.ndarray, frame_index: int) -> None:
        """Move matched tracks to their detections and update their velocity."""
        gap = (frame_index - self._last_seen[tracks]).astype(np.float64)
        measured = (observed - self._boxes[tracks]) / gap[:, None]
        m = self.config.velocity_momentum
        first = (self._hits[tracks] == 1)[:, None]  # no velocity yet: take the measurement
        blended = m * measured + (1.0 - m) * self._velocity[tracks]
        self._velocity[tracks] = np.where(first, measured, blended)
        self._boxes[tracks] = observed
        self._last_seen[tracks] = frame_index
        self._hits[tracks] += 1

    def _start(self, boxes: np.ndarray, frame_index: int) -> np.ndarray:
        """Append one track per box; return their new ids."""
        n = len(boxes)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        self._ids = np.concatenate([self._ids, ids])
        self._boxes = np.concatenate([self._boxes, boxes])
        self._velocity = np.concatenate([self._velocity, np.zeros((n, 4))])
        self._last_seen = np.concatenate([self._last_seen, np.full(n, frame_index, np.int64)])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        return ids

    def state(self) -> dict[str, Any]:
        """Everything needed to resume, as plain ints, floats, strings, lists and dicts.

        Returns:
            ``{"version", "config", "next_id", "last_frame", "tracks"}``; each track is
            ``{"id", "box", "velocity", "last_seen", "hits"}`` (box and velocity: 4 floats).
        """
        tracks = [
            {"id": i, "box": b, "velocity": v, "last_seen": s, "hits": h}
            for i, b, v, s, h in zip(
                self._ids.tolist(),
                self._boxes.tolist(),
                self._velocity.tolist(),
                self._last_seen.tolist(),
                self._hits.tolist(),
                strict=True,
            )
        ]
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "next_id": self._next_id,
            "last_frame": self._last_frame,
            "tracks": tracks,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Tracker:
        """Rebuild a tracker from :meth:`state` (e.g. after a msgpack round trip).

        Raises:
            TrackingError: On another version, a missing key or a malformed track.
        """
        if state.get("version") != STATE_VERSION:
            msg = f"tracker state: expected version {STATE_VERSION}, got {state.get('version')!r}"
            raise TrackingError(msg)
        try:
            tracker = cls(TrackerConfig.from_dict(state["config"]))
            tracker._next_id, tracker._last_frame = int(state["next_id"]), int(state["last_frame"])
            rows = list(state["tracks"])
            cols = {k: [t[k] for t in rows] for k in _TRACK_KEYS}
            tracker._ids = np.asarray(cols["id"], np.int64).reshape(-1)
            tracker._boxes = np.asarray(cols["box"], np.float64).reshape(-1, 4)
            tracker._velocity = np.asarray(cols["velocity"], np.float64).reshape(-1, 4)
            tracker._last_seen = np.asarray(cols["last_seen"], np.int64).reshape(-1)
            tracker._hits = np.asarray(cols["hits"], np.int64).reshape(-1)
        except TrackingError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            msg = f"tracker state: malformed ({type(e).__name__}: {e}); expected {_TRACK_KEYS=}"
            raise TrackingError(msg) from e
        sizes = {len(tracker._ids), len(tracker._boxes), len(tracker._velocity)}
        if len(sizes) != 1:
            msg = f"tracker state: expected one box and velocity per track, got sizes {sizes}"
            raise TrackingError(msg)
        return tracker
