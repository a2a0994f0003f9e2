"""``SapiensWorker``: detections and frames in, ``FrameResult``s out (plain class; flows/ makes
it a Ray actor). It holds one model (``actors.groups.ModelSpec``), loads its backbone groups as
jobs ask for their tasks, and processes one frame batch per call.

Model math lives in ``models.analyze``; this file only moves arrays across the numpy/torch
boundary and builds the storage records. The spec types and group building live in
``actors.groups`` (re-exported here).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actors.groups import (
    TINY_TASKS,
    InferSpec,
    ModelSpec,
    build_groups,
    model_facts,
    runtime_spec,
)
from actors.messages import FrameBatch, PersonBatch
from models.analyze import Analyzer, DenseMode, PersonResults
from models.batching import DynamicBatcher
from models.metadata import keypoint_set
from models.runtime import Predictor
from storage import FrameStatus
from storage.frame import FrameResult

__all__ = [
    "TINY_TASKS",
    "FrameMeta",
    "InferSpec",
    "ModelSpec",
    "SapiensWorker",
    "build_groups",
    "frame_records",
    "model_facts",
    "runtime_spec",
]

logger = logging.getLogger(__name__)


class SapiensWorker:
    """Holds one model (``ModelSpec``); maps a frame batch plus its persons to FrameResults for
    whichever tasks and dense mode the call asks.

    Released checkpoints are one backbone group per task: a group is loaded the first time a
    call (or :meth:`model_facts`) asks for its task, and kept. Safe to call from several
    threads at once (a shared actor serves every running job): the crops of concurrent calls
    meet in one :class:`~models.batching.DynamicBatcher`, so forwards stay full (a forward runs
    the heads its calls want), while cropping and decoding of one call overlap the forwards of
    others.

    Args:
        model: the model; an ``InferSpec`` (an actor made for one job) stands for its model,
            its tasks loaded at once and its tasks and dense mode the calls' defaults.
        batch_size: crops per forward.
        batch_deadline_ms: longest a crop waits for crops of other calls before its forward
            runs anyway.
        preload: tasks whose groups load now (the rest load on first use).
    """

    def __init__(
        self,
        model: ModelSpec | InferSpec,
        *,
        batch_size: int | None = None,
        batch_deadline_ms: float | None = None,
        preload: tuple[str, ...] = (),
    ) -> None:
        self._default_tasks: tuple[str, ...] | None = None
        self._default_dense = "crop"
        if isinstance(model, InferSpec):
            spec, model = model, model.model
            self._default_tasks, self._default_dense = spec.tasks, spec.dense_mode
            preload = preload or spec.tasks
            batch_size = batch_size or spec.batch_size
            batch_deadline_ms = (
                spec.batch_deadline_ms if batch_deadline_ms is None else batch_deadline_ms
            )
        self.key = model
        self.batch_size = batch_size or 8
        if model.cpu_threads and model.resolved_device == "cpu":
            torch.set_num_threads(model.cpu_threads)
        self.groups: list[Predictor] = []
        self.analyzer: Analyzer | None = None
        self._load_lock = threading.Lock()
        if preload or model.size == "tiny":
            self._analyzer_for(preload or model.tasks)
        deadline_ms = 10.0 if batch_deadline_ms is None else batch_deadline_ms
        self.batcher = DynamicBatcher(
            self._forward, batch_size=self.batch_size, deadline_s=deadline_ms / 1000
        )
        self._lock = threading.Lock()
        self._counts = {"calls": 0, "frames": 0, "persons": 0, "in_flight": 0, "call_s": 0.0}
        # Wall-clock time with at least one call in flight: the actor's working time, cropping,
        # decoding and waiting for its forwards included (what its capacity is measured by).
        self._active_s, self._active_since = 0.0, 0.0
        self._jobs: set[str] = set()
        logger.info(
            "sapiens worker: size=%s device=%s loaded=%s",
            model.size,
            model.resolved_device,
            self.tasks,
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks of the loaded groups."""
        return tuple(t for g in self.groups for t in g.model.tasks)

    def _analyzer_for(self, tasks: tuple[str, ...]) -> Analyzer:
        """The analyzer, after loading the groups of any of ``tasks`` not loaded yet."""
        offered = self.key.tasks
        unknown = [t for t in tasks if t not in offered]
        if unknown or not tasks:
            raise ValueError(
                f"tasks of a {self.key.name} model must be a non-empty subset of "
                f"{list(offered)}, got {list(tasks)}"
            )
        analyzer = self.analyzer
        if analyzer is not None and all(t in analyzer.tasks for t in tasks):
            return analyzer
        with self._load_lock:
            missing = tuple(h for h in self.key.heads_for(tasks) if h not in self.tasks)
            if missing:
                self.groups = [*self.groups, *build_groups(self.key, missing, self.batch_size)]
                self.analyzer = self._make_analyzer()
            assert self.analyzer is not None
            return self.analyzer

    def _make_analyzer(self) -> Analyzer:
        flip = None
        if self.key.flip_test and "pose" in self.tasks:
            k = next(
                g.model.heads["pose"].spec.out_dim for g in self.groups if "pose" in g.model.heads
            )
            flip = keypoint_set(k).flip_indices
        return Analyzer(
            self.groups,
            flip_indices=flip,
            crop_size=self.key.resolved_crop_size,
        )

    def _forward(
        self, images: torch.Tensor, want: frozenset[str] | None
    ) -> dict[str, torch.Tensor]:
        analyzer = self.analyzer
        assert analyzer is not None, "a forward before any group was loaded"
        return analyzer.run_groups(images, want)

    def model_facts(self, tasks: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Names, sizes and checkpoint provenance of the groups serving ``tasks`` (loading
        them now: a job asks before its first batch), for the store's attributes."""
        tasks = tuple(tasks) if tasks else (self._default_tasks or self.tasks)
        analyzer = self._analyzer_for(tasks)
        return model_facts(self.key, self.groups, analyzer.check_tasks(tasks))

    def stats(self) -> dict[str, Any]:
        """Load counters: calls, frames, persons, calls in flight, distinct jobs served, and
        the batcher's (forwards, fill, busy fraction of the device)."""
        with self._lock:
            counts: dict[str, Any] = {**self._counts, "jobs": len(self._jobs)}
            counts["active_s"] = self._active_s + (
                time.perf_counter() - self._active_since if self._counts["in_flight"] else 0.0
            )
        return {
            **counts,
            "device": self.key.resolved_device,
            "tasks_loaded": list(self.tasks),
            **self.batcher.stats().to_dict(),
        }

    def __call__(
        self,
        batch: FrameBatch,
        persons: PersonBatch,
        first_index: int,
        out_size: tuple[int, int],
        job: str = "",
        tasks: tuple[str, ...] | None = None,
        dense_mode: DenseMode | None = None,
    ) -> list[FrameResult]:
        """Analyse one batch.

        Args:
            batch: decoded frames.
            persons: the batch's tracked persons (``frame`` = row in the batch).
            first_index: store index of the batch's first frame.
            out_size: (H', W') of the dense maps.
            job: the calling job (batches take crops from jobs in turn).
            tasks: the tasks to produce (default: the job's of an actor made for one job, else
                every loaded one).
            dense_mode: ``crop`` or ``frame`` (see ``models.analyze.Analyzer``; default: the
                job's, else ``crop``).
        """
        t0 = time.perf_counter()
        tasks = tuple(tasks) if tasks else (self._default_tasks or self.tasks)
        dense_mode = dense_mode or self._default_dense
        analyzer = self._analyzer_for(tasks)
        with self._lock:
            if self._counts["in_flight"] == 0:
                self._active_since = t0
            self._counts["in_flight"] += 1
            self._jobs.add(job)
        try:
            with self.batcher.session(job, frozenset(tasks)) as forward:
                frames = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
                res = analyzer(
                    frames,
                    torch.from_numpy(persons.frame),
                    torch.from_numpy(persons.boxes),
                    torch.from_numpy(persons.scores),
                    out_size=out_size,
                    forward=forward,
                    tasks=tasks,
                    dense_mode=dense_mode,
                )
            meta = FrameMeta.from_batch(batch, first_index, persons)
            return frame_records(meta, persons, res)
        finally:
            with self._lock:
                c = self._counts
                c["in_flight"] -= 1
                if c["in_flight"] == 0:
                    self._active_s += time.perf_counter() - self._active_since
                c["calls"] += 1
                c["frames"] += len(batch)
                c["persons"] += len(persons)
                c["call_s"] += time.perf_counter() - t0


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameMeta:
    """Where a batch's frames go in the store and where they came from (no pixels)."""

    first_index: int
    source_index: np.ndarray
    pts: np.ndarray
    time_s: np.ndarray
    status: tuple[FrameStatus, ...]

    @classmethod
    def from_batch(cls, batch: FrameBatch, first_index: int, persons: PersonBatch) -> FrameMeta:
        """The batch's frames; a corrupt one (decode) or one the person stage skipped is not
        ``ok``."""
        corrupt = batch.corrupt if batch.corrupt is not None else np.zeros(len(batch), bool)
        status: list[FrameStatus] = ["corrupt" if c else "ok" for c in corrupt]
        for f in persons.skipped:
            status[f] = "skipped"
        return cls(
            first_index=first_index,
            source_index=batch.source_index,
            pts=batch.pts,
            time_s=batch.time_s,
            status=tuple(status),
        )

    def __len__(self) -> int:
        return len(self.source_index)


def frame_records(meta: FrameMeta, persons: PersonBatch, res: PersonResults) -> list[FrameResult]:
    """One storage record per frame of the batch."""
    return [_record(meta, persons, res, f) for f in range(len(meta))]


def _record(meta: FrameMeta, persons: PersonBatch, res: PersonResults, f: int) -> FrameResult:
    rows = persons.frame == f
    pts = int(meta.pts[f])
    fields: dict[str, Any] = {
        "index": meta.first_index + f,
        "source_index": int(meta.source_index[f]),
        "pts": pts if pts >= 0 else None,
        "time_s": float(meta.time_s[f]),
        "track_id": persons.track_id[rows].astype(np.int64),
        "box_xyxy": persons.boxes[rows].astype(np.float32),
        "score": persons.scores[rows].astype(np.float32),
        "status": meta.status[f],
    }
    if res.keypoints is not None and res.keypoint_scores is not None:
        fields["keypoints_xy"] = res.keypoints[rows].numpy()
        fields["keypoint_score"] = res.keypoint_scores[rows].numpy()
    patches = res.patches
    if patches is not None:
        fields["patch_box"] = patches.box[rows]
        if patches.part is not None:
            fields["part_patch"] = patches.split("part", rows)
            fields["fg_patch"] = patches.split("fg", rows)
        if patches.depth is not None and patches.depth_scale is not None:
            fields["depth_patch"] = patches.split("depth", rows)
            fields["depth_scale"] = patches.depth_scale[rows]
        if patches.normal is not None:
            fields["normal_patch"] = patches.split("normal", rows)
        if patches.pointmap is not None and patches.pointmap_scale is not None:
            fields["pointmap_patch"] = patches.split("pointmap", rows)
            fields["pointmap_scale"] = patches.pointmap_scale[rows]
    maps = res.maps
    if maps is not None:
        if maps.part is not None:
            fields["part"] = maps.part[f].numpy()
            fields["person_map"] = maps.person[f].numpy().astype(np.uint16)
        if maps.depth is not None:
            fields["depth"] = maps.depth[f].numpy()
        if maps.normal is not None:
            fields["normal"] = maps.normal[f].numpy()
        if maps.pointmap is not None:
            fields["pointmap"] = maps.pointmap[f].numpy()
    return FrameResult(**fields)
