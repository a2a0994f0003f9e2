"""Detect persons in a frame batch and give them stable track ids.

``PersonStage`` is one job's detector and tracker (tracking is sequential in frame order);
``PersonWorker`` is the pooled actor that serves every job: the detector is built once per
setting, and each call brings the job's tracker state and returns the next one. The tracker
counts in sampled frames (its ``max_age`` and motion model see one step per analysed frame,
whatever the stride or target fps). Its state is plain data, so a restarted job can continue
with the same ids.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from actors.messages import FrameBatch, PersonBatch
from models.detect import (
    Detections,
    DetectorKind,
    PersonDetector,
    build_detector,
    detector_device,
)
from models.track import Tracker, TrackerConfig
from storage import ResumeState

__all__ = ["PersonRequest", "PersonStage", "PersonWorker"]


class PersonStage:
    """Detector + per-job tracker.

    Args:
        detector: ``full-frame``, ``boxes`` or ``rtdetr``.
        detector_options: constructor options of that detector (e.g. ``boxes_by_source_index``).
        tracker_state: state from :meth:`state` to continue from, or None for a fresh tracker.
        tracker_config: tracker thresholds (default: the pipeline's).
        max_persons: a frame with more detections than this is skipped (no persons, no
            tracker update; ``PersonBatch.skipped``) instead of failing the job at the store,
            which holds that many per frame; None: no limit.
    """

    def __init__(
        self,
        detector: str,
        detector_options: Mapping[str, Any] | None = None,
        *,
        tracker_state: Mapping[str, Any] | None = None,
        tracker_config: TrackerConfig | None = None,
        built: PersonDetector | None = None,
        max_persons: int | None = None,
    ) -> None:
        self.max_persons = max_persons
        self.skipped: list[int] = []  # rows of the last batch that were skipped
        self.detector = built or build_detector(detector, **dict(detector_options or {}))  # type: ignore[arg-type]
        self.tracker = (
            Tracker.from_state(dict(tracker_state)) if tracker_state else Tracker(tracker_config)
        )
        self._step = int(tracker_state["last_frame"]) + 1 if tracker_state else 0
        self._next_source = 0

    def __call__(self, batch: FrameBatch) -> tuple[Detections, np.ndarray]:
        """Detections of the batch (``frame`` = row in the batch, grouped by frame) and the
        (N,) track id of each, -1 for detections the tracker did not track. A corrupt frame (black,
        ``batch.corrupt``) has no persons and leaves the tracker as it was; it still takes its
        frame step, so the tracks on either side of it are one frame further apart."""
        self.skipped = []
        if len(batch) == 0:
            return Detections.empty(), np.zeros(0, np.int64)
        frames = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
        found = self.detector(frames, batch.source_index)
        parts, ids = [], []
        for f in range(len(batch)):
            if batch.corrupt[f]:
                self._step += 1
                continue
            mine = found.for_frame(f)
            if self.max_persons is not None and len(mine) > self.max_persons:
                self.skipped.append(f)
                self._step += 1
                continue
            ids.append(self.tracker.update(mine, self._step))
            self._step += 1
            parts.append(mine)
        if not parts:
            return Detections.empty(), np.zeros(0, np.int64)
        self._next_source = int(batch.source_index[-1]) + 1
        return Detections.concat(parts), np.concatenate(ids).astype(np.int64)

    def tracked(self, batch: FrameBatch) -> PersonBatch:
        """The batch's persons: every detection, with its score and its track id, or -1
        (``UNTRACKED``) when the tracker gave it none (too weak to start a track and matching
        none). Nothing the detector found is dropped; the store keeps such persons with id -1."""
        found, ids = self(batch)
        return PersonBatch(
            boxes=np.ascontiguousarray(found.boxes_xyxy, np.float32),
            scores=np.ascontiguousarray(found.scores, np.float32),
            frame=np.ascontiguousarray(found.frame, np.int64),
            track_id=ids,
            skipped=tuple(self.skipped),
        )

    def checkpoint(self) -> ResumeState:
        """Where a restarted job can pick up after the frames seen so far: the sampled frames
        analysed (the store index reached), the decode index to restart decoding at, and the
        tracker state."""
        return ResumeState(
            frames=self._step, next_source_index=self._next_source, tracker=self.tracker.state()
        )

    def state(self) -> dict[str, Any]:
        """The tracker state after the last processed frame (plain data)."""
        return self.tracker.state()


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonRequest:
    """What a job asks of the person stage: its detector and tracker settings.

    Args:
        detector: ``full-frame``, ``boxes`` or ``rtdetr``.
        options: that detector's constructor options.
        tracker: tracker thresholds (None: the pipeline's).
        max_persons: see :class:`PersonStage`.
    """

    detector: DetectorKind
    options: Mapping[str, Any] = field(default_factory=dict)
    tracker: TrackerConfig | None = None
    max_persons: int | None = None


# Detectors whose construction is costly (weights) are kept per setting; the others are built
# per call, since their options are the job's own data (given boxes).
_CACHED_DETECTORS = ("rtdetr",)


class PersonWorker:
    """The pooled person stage: detection and tracking for every job, state in the messages.

    Args:
        max_detectors: detector settings kept built at once (least recently used goes).
    """

    def __init__(self, max_detectors: int = 4) -> None:
        self._detectors: OrderedDict[str, PersonDetector] = OrderedDict()
        self._max = max_detectors
        self._lock = threading.Lock()

    def __call__(
        self, batch: FrameBatch, request: PersonRequest, state: ResumeState | None
    ) -> tuple[PersonBatch, ResumeState]:
        """Track ``batch``'s persons continuing from ``state`` (None: the job's first batch);
        returns them and the job's state after the batch."""
        stage = PersonStage(
            request.detector,
            tracker_state=dict(state.tracker) if state is not None else None,
            tracker_config=request.tracker,
            built=self._detector(request),
            max_persons=request.max_persons,
        )
        persons = stage.tracked(batch)
        if len(batch) == 0 and state is not None:
            return persons, state
        return persons, stage.checkpoint()

    def prepare(self, request: PersonRequest) -> None:
        """Build (or find built) the request's detector now, so that missing or unfit weights
        fail the job before any frame is decoded for it."""
        self._detector(request)

    def _detector(self, request: PersonRequest) -> PersonDetector:
        options = dict(request.options)
        if request.detector not in _CACHED_DETECTORS:
            return build_detector(request.detector, **options)
        # "auto" becomes this member's device: CUDA when Ray gave it a share of a GPU
        options["device"] = detector_device(str(options.get("device", "auto")))
        key = json.dumps([request.detector, options], sort_keys=True, default=str)
        with self._lock:
            if key in self._detectors:
                self._detectors.move_to_end(key)
                return self._detectors[key]
        built = build_detector(request.detector, **options)
        with self._lock:
            self._detectors[key] = built
            while len(self._detectors) > self._max:
                self._detectors.popitem(last=False)
        return built
