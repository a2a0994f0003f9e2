"""``SapiensWorker``: detections and frames in, ``FrameResult``s out (plain class; flows/ makes
it a Ray actor). Setup loads the backbone groups once; each call processes one frame batch.

Model math lives in ``models.analyze``; this file only resolves checkpoints, moves arrays across
the numpy/torch boundary and builds the storage records.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.messages import FrameBatch, PersonBatch
from models import build_model, load_checkpoint
from models.analyze import Analyzer, PersonResults
from models.batching import DynamicBatcher
from models.hub import hub_ref
from models.metadata import keypoint_set
from models.runtime import Predictor, RuntimeSpec
from models.spec import INPUT_SIZE
from storage.frame import FrameResult

__all__ = [
    "FrameMeta",
    "InferSpec",
    "SapiensWorker",
    "build_groups",
    "frame_records",
    "model_facts",
    "runtime_spec",
]

logger = logging.getLogger(__name__)

TINY_CROP = (256, 192)


@dataclass(frozen=True, slots=True, kw_only=True)
class InferSpec:
    """What the worker runs.

    Args:
        tasks: any of pose, seg, depth, normal.
        size: ``tiny`` (random weights from ``seed``) or a released size.
        weights: ``hub`` or a directory holding the released checkpoint files.
        fmt: hub format (``original``, ``torchscript``, ``bfloat16``).
        num_keypoints: pose keypoint set of the tiny model (released pose models are 308).
        device: ``cuda``/``cpu``; None picks CUDA when available.
        dtype: see ``RuntimeSpec``.
        compile: ``torch.compile`` each group.
        batch_size: crops per forward.
        flip_test: average pose heatmaps with the mirrored crop's.
        seed: random-weight seed of the tiny model (equal seeds, equal weights).
        crop_size: (H, W) of the person crops; None = 1024x768 for released models and
            256x192 for ``tiny`` (random weights gain nothing from full-size crops, and the
            CPU test suite stays fast).
        cpu_threads: torch intra-op threads on a CPU device (Ray limits an actor to the
            CPUs it reserved; inference is the bottleneck stage, so it may use more).
        batch_deadline_ms: longest a crop waits for crops of other calls (other frame
            batches, other jobs) before its forward runs anyway.
        dense_mode: ``crop`` (dense tasks on person crops, composited) or ``frame`` (on the
            whole frame, as the official demos); see ``models.analyze.Analyzer``.
    """

    tasks: tuple[str, ...]
    size: str = "tiny"
    weights: str = "hub"
    fmt: str = "original"
    num_keypoints: int = 308
    device: str | None = None
    dtype: str | None = None
    compile: bool = False
    batch_size: int = 8
    flip_test: bool = False
    seed: int = 0
    crop_size: tuple[int, int] | None = None
    cpu_threads: int | None = None
    batch_deadline_ms: float = 10.0
    dense_mode: str = "crop"

    @property
    def resolved_crop_size(self) -> tuple[int, int]:
        if self.crop_size is not None:
            return self.crop_size
        return TINY_CROP if self.size == "tiny" else INPUT_SIZE

    @property
    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _checkpoint_source(spec: InferSpec, task: str) -> str:
    if spec.weights == "hub":
        suffix = "" if spec.fmt == "original" else f"-{spec.fmt}"
        return f"facebook/sapiens-{task}-{spec.size}{suffix}"
    ref = hub_ref(task, spec.size, spec.fmt)
    for name in ref.filenames:
        if (Path(spec.weights) / name).is_file():
            return str(Path(spec.weights) / name)
    raise FileNotFoundError(f"none of {list(ref.filenames)} is in {spec.weights}")


def runtime_spec(spec: InferSpec) -> RuntimeSpec:
    return RuntimeSpec(
        device=spec.resolved_device,
        dtype=spec.dtype,
        compile=spec.compile,
        batch_size=spec.batch_size,
    )


def model_facts(spec: InferSpec, groups: list[Predictor]) -> dict[str, Any]:
    """Names, sizes and checkpoint provenance of loaded groups, for the store's attributes."""
    return {
        "size": spec.size,
        "tasks": list(spec.tasks),
        "random_weights": spec.size == "tiny",
        "seed": spec.seed,
        "checkpoints": {
            part: info.to_dict() for g in groups for part, info in g.model.checkpoints.items()
        },
    }


def build_groups(spec: InferSpec) -> list[Predictor]:
    """One predictor per backbone group: all tasks share the tiny model's backbone; released
    checkpoints each carry their own backbone, so they form one group per task."""
    runtime = runtime_spec(spec)
    if spec.size == "tiny":
        torch.manual_seed(spec.seed)
        model = build_model(spec.tasks, "tiny", num_keypoints=spec.num_keypoints)
        return [Predictor(model, runtime)]
    return [
        Predictor(load_checkpoint(_checkpoint_source(spec, t), task=t), runtime) for t in spec.tasks
    ]


class SapiensWorker:
    """Loads the backbone groups once; maps a frame batch plus its persons to FrameResults.

    Safe to call from several threads at once (a shared actor serves every running job): the
    crops of concurrent calls meet in one :class:`~models.batching.DynamicBatcher`, so forwards
    stay full, while cropping and decoding of one call overlap the forwards of others.
    """

    def __init__(self, spec: InferSpec) -> None:
        self.spec = spec
        if spec.cpu_threads and spec.resolved_device == "cpu":
            torch.set_num_threads(spec.cpu_threads)
        self.groups = build_groups(spec)
        flip = None
        if spec.flip_test and "pose" in spec.tasks:
            k = next(
                g.model.heads["pose"].spec.out_dim for g in self.groups if "pose" in g.model.heads
            )
            flip = keypoint_set(k).flip_indices
        self.analyzer = Analyzer(
            self.groups,
            flip_indices=flip,
            crop_size=spec.resolved_crop_size,
            dense_mode=spec.dense_mode,
        )
        self.batcher = DynamicBatcher(
            self.analyzer.run_groups,
            batch_size=spec.batch_size,
            deadline_s=spec.batch_deadline_ms / 1000,
        )
        self._lock = threading.Lock()
        self._counts = {"calls": 0, "frames": 0, "persons": 0, "in_flight": 0, "call_s": 0.0}
        # Wall-clock time with at least one call in flight: the actor's working time, cropping,
        # decoding and waiting for its forwards included (what its capacity is measured by).
        self._active_s, self._active_since = 0.0, 0.0
        self._jobs: set[str] = set()
        logger.info(
            "sapiens worker: size=%s tasks=%s device=%s",
            spec.size,
            spec.tasks,
            spec.resolved_device,
        )

    def model_facts(self) -> dict[str, Any]:
        """Names, sizes and checkpoint provenance, for the store's attributes."""
        return model_facts(self.spec, self.groups)

    def stats(self) -> dict[str, Any]:
        """Load counters: calls, frames, persons, calls in flight, distinct jobs served, and
        the batcher's (forwards, fill, busy fraction of the device)."""
        with self._lock:
            counts: dict[str, Any] = {**self._counts, "jobs": len(self._jobs)}
            counts["active_s"] = self._active_s + (
                time.perf_counter() - self._active_since if self._counts["in_flight"] else 0.0
            )
        return {**counts, "device": self.spec.resolved_device, **self.batcher.stats().to_dict()}

    def __call__(
        self,
        batch: FrameBatch,
        persons: PersonBatch,
        first_index: int,
        out_size: tuple[int, int],
        job: str = "",
    ) -> list[FrameResult]:
        """Analyse one batch.

        Args:
            batch: decoded frames.
            persons: the batch's tracked persons (``frame`` = row in the batch).
            first_index: store index of the batch's first frame.
            out_size: (H', W') of the dense maps.
            job: the calling job (batches take crops from jobs in turn).
        """
        t0 = time.perf_counter()
        with self._lock:
            if self._counts["in_flight"] == 0:
                self._active_since = t0
            self._counts["in_flight"] += 1
            self._jobs.add(job)
        try:
            with self.batcher.session(job) as forward:
                frames = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
                res = self.analyzer(
                    frames,
                    torch.from_numpy(persons.frame),
                    torch.from_numpy(persons.boxes),
                    torch.from_numpy(persons.scores),
                    out_size=out_size,
                    forward=forward,
                )
            return frame_records(FrameMeta.from_batch(batch, first_index), persons, res)
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

    @classmethod
    def from_batch(cls, batch: FrameBatch, first_index: int) -> FrameMeta:
        return cls(
            first_index=first_index,
            source_index=batch.source_index,
            pts=batch.pts,
            time_s=batch.time_s,
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
    }
    if res.keypoints is not None and res.keypoint_scores is not None:
        fields["keypoints_xy"] = res.keypoints[rows].numpy()
        fields["keypoint_score"] = res.keypoint_scores[rows].numpy()
    maps = res.maps
    if maps is not None:
        if maps.part is not None:
            fields["part"] = maps.part[f].numpy()
            fields["person_map"] = maps.person[f].numpy().astype(np.uint16)
        if maps.depth is not None:
            fields["depth"] = maps.depth[f].numpy()
        if maps.normal is not None:
            fields["normal"] = maps.normal[f].numpy()
    return FrameResult(**fields)
