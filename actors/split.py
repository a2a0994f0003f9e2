"""Split placement: the backbone, each task head and the post-processing in separate workers.

``BackboneWorker`` crops persons and runs every backbone group once per crop; its features go
to one ``HeadWorker`` per task (on fractional GPUs, so heads scale on their own), and
``PostWorker`` decodes their raw outputs into frame results. The math is the fused path's
(``SapiensWorker``), so both placements give equal results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from actors.infer import (
    FrameMeta,
    InferSpec,
    build_groups,
    frame_records,
    model_facts,
    runtime_spec,
)
from actors.messages import FrameBatch, PersonBatch
from models.analyze import Analyzer, decode_outputs
from models.preprocess import normalize
from models.runtime import Predictor
from models.sapiens import SapiensModel
from models.spec import output_keypoints
from storage import FrameResult

__all__ = ["BackboneWorker", "FeatureBatch", "HeadWorker", "PostWorker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureBatch:
    """What the backbone hands the heads and the post-processing: features, no pixels.

    Attributes:
        meta: store and source positions of the batch's frames.
        persons: the tracked persons, grouped by frame.
        features: one (N, C, h, w) float32 array per backbone group.
        center, scale, matrix: the crops' geometry, (N, 2), (N, 2), (N, 2, 3).
        frame_size: (H, W) of the frames.
        out_size: (H', W') of the dense maps.
    """

    meta: FrameMeta
    persons: PersonBatch
    features: tuple[np.ndarray, ...]
    center: np.ndarray
    scale: np.ndarray
    matrix: np.ndarray
    frame_size: tuple[int, int]
    out_size: tuple[int, int]


class BackboneWorker:
    """Crops and backbone passes of every group (heads are dropped)."""

    def __init__(self, spec: InferSpec) -> None:
        if spec.model.flip_test:
            raise ValueError("flip_test needs the pose head beside its backbone: use fused")
        if spec.dense_mode != "crop":
            raise ValueError("the whole-frame dense mode runs in fused placement only")
        groups = build_groups(spec.model, spec.tasks, spec.batch_size)
        runtime = runtime_spec(spec.model, spec.batch_size)
        self.facts = model_facts(spec.model, groups, spec.tasks)
        self.backbones = [Predictor(SapiensModel(g.model.backbone, {}), runtime) for g in groups]
        self.analyzer = Analyzer(groups, crop_size=spec.resolved_crop_size)

    def model_facts(self, tasks: tuple[str, ...] | None = None) -> dict[str, object]:
        """Provenance of the job's groups (made for the job: ``tasks`` are its own)."""
        return self.facts

    def __call__(
        self,
        batch: FrameBatch,
        persons: PersonBatch,
        first_index: int,
        out_size: tuple[int, int],
    ) -> FeatureBatch:
        frames = torch.from_numpy(batch.frames).permute(0, 3, 1, 2)
        crop = self.analyzer.crop(
            frames, torch.from_numpy(persons.frame), torch.from_numpy(persons.boxes)
        )
        crops = normalize(crop.crops, self.analyzer.norm)
        feats = tuple(
            p(crops)["features"].float().cpu().numpy()
            if len(persons.boxes)
            else np.zeros((0,), np.float32)
            for p in self.backbones
        )
        return FeatureBatch(
            meta=FrameMeta.from_batch(batch, first_index, persons),
            persons=persons,
            features=feats,
            center=crop.center.cpu().numpy(),
            scale=crop.scale.cpu().numpy(),
            matrix=crop.matrix.cpu().numpy(),
            frame_size=(batch.frames.shape[1], batch.frames.shape[2]),
            out_size=out_size,
        )


class _HeadOnly(nn.Module):
    def __init__(self, task: str, head: nn.Module) -> None:
        super().__init__()
        self.task, self.head = task, head

    def forward(self, feats: Tensor) -> dict[str, Tensor]:
        return {self.task: self.head(feats)}


class HeadWorker:
    """One task head on the features of its backbone group."""

    def __init__(self, spec: InferSpec, task: str) -> None:
        groups = build_groups(spec.model, spec.tasks, spec.batch_size)
        (self.group,) = [i for i, g in enumerate(groups) if task in g.model.heads]
        self.task = task
        head = groups[self.group].model.heads[task]
        self.predictor = Predictor(_HeadOnly(task, head), runtime_spec(spec.model, spec.batch_size))

    def __call__(self, fb: FeatureBatch) -> np.ndarray:
        if len(fb.persons.boxes) == 0:
            return np.zeros((0,), np.float32)
        out = self.predictor(torch.from_numpy(fb.features[self.group]))[self.task]
        return out.float().cpu().numpy()


class PostWorker:
    """Decodes raw head outputs (given in ``spec.tasks`` order) into frame records."""

    def __init__(self, spec: InferSpec) -> None:
        self.spec = spec
        self.num_keypoints = output_keypoints(spec.size, spec.model.num_keypoints)

    def __call__(self, fb: FeatureBatch, *outputs: np.ndarray) -> list[FrameResult]:
        raw = {
            t: torch.from_numpy(o)
            for t, o in zip(self.spec.tasks, outputs, strict=True)
            if o.ndim == 4
        }
        res = decode_outputs(
            raw,
            center=torch.from_numpy(fb.center),
            scale=torch.from_numpy(fb.scale),
            matrix=torch.from_numpy(fb.matrix),
            boxes=torch.from_numpy(fb.persons.boxes),
            frame_size=fb.frame_size,
            crop_size=self.spec.resolved_crop_size,
            tasks=self.spec.tasks,
            num_keypoints=self.num_keypoints,
        )
        return frame_records(fb.meta, fb.persons, res)
