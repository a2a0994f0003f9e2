"""``PersonStage``: detect persons in a frame batch and give them stable track ids.

One instance per job (tracking is sequential in frame order). The tracker counts in sampled
frames (its ``max_age`` and motion model see one step per analysed frame, whatever the stride or
target fps). Its state is plain data, so a restarted job can continue with the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from actors.messages import FrameBatch
from models.detect import Detections, build_detector
from models.track import Tracker, TrackerConfig
from storage import ResumeState

__all__ = ["PersonStage"]


class PersonStage:
    """Detector + per-job tracker.

    Args:
        detector: ``full-frame``, ``boxes`` or ``rtdetr``.
        detector_options: constructor options of that detector (e.g. ``boxes_by_source_index``).
        tracker_state: state from :meth:`state` to continue from, or None for a fresh tracker.
        tracker_config: tracker thresholds (default: the pipeline's).
    """

    def __init__(
        self,
        detector: str,
        detector_options: Mapping[str, Any] | None = None,
        *,
        tracker_state: Mapping[str, Any] | None = None,
        tracker_config: TrackerConfig | None = None,
    ) -> None:
        self.detector = build_detector(detector, **dict(detector_options or {}))  # type: ignore[arg-type]
        self.tracker = (
            Tracker.from_state(dict(tracker_state)) if tracker_state else Tracker(tracker_config)
        )
        self._step = int(tracker_state["last_frame"]) + 1 if tracker_state else 0
        self._next_source = 0

    def __call__(self, batch: FrameBatch) -> tuple[Detections, np.ndarray]:
        """Detections of the batch (``frame`` = row in the batch, grouped by frame) and the
        (N,) track id of each, -1 for detections too weak to track."""
        if len(batch) == 0:
            return Detections.empty(), np.zeros(0, np.int64)
        frames = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
        found = self.detector(frames, batch.source_index)
        parts, ids = [], []
        for f in range(len(batch)):
            mine = found.for_frame(f)
            ids.append(self.tracker.update(mine, self._step))
            self._step += 1
            parts.append(mine)
        self._next_source = int(batch.source_index[-1]) + 1
        return Detections.concat(parts), np.concatenate(ids).astype(np.int64)

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
