"""Which model a Sapiens actor holds (``ModelSpec``), what one job asks of it (``InferSpec``),
and how its backbone groups are built and described (checkpoints, random tiny weights,
provenance for the store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import build_model, load_checkpoint
from models.analyze import DenseMode
from models.hub import hub_ref
from models.runtime import CompileMode, Predictor, RuntimeSpec, compile_mode
from models.spec import INPUT_SIZE

__all__ = [
    "TINY_CROP",
    "TINY_TASKS",
    "InferSpec",
    "ModelSpec",
    "build_groups",
    "model_facts",
    "runtime_spec",
]

TINY_CROP = (256, 192)


#: Tasks of the tiny model: it always has every head, so its weights for a seed do not depend
#: on which tasks a job asks for (a job's tasks choose the heads that run, not the weights).
TINY_TASKS: tuple[str, ...] = ("pose", "seg", "depth", "normal")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Which model a Sapiens actor holds: weights, precision and input size. Actors are pooled
    by this key; the jobs bound to one actor may ask for different tasks and dense modes.

    Args:
        size: ``tiny`` (random weights from ``seed``) or a released size.
        weights: ``hub`` or a directory holding the released checkpoint files.
        fmt: hub format (``original``, ``torchscript``, ``bfloat16``).
        num_keypoints: pose keypoint set of the tiny model (released pose models are 308).
        device: ``cuda``/``cpu``; None picks CUDA when available.
        dtype: see ``RuntimeSpec``.
        compile: ``torch.compile`` mode of each group (``models.runtime.CompileMode``; a bool
            is ``default`` or ``off``).
        channels_last: channels-last memory order for convolutions (see ``RuntimeSpec``).
        flip_test: average pose heatmaps with the mirrored crop's (test-time augmentation:
            a property of the pose predictions, so part of the key).
        seed: random-weight seed of the tiny model (equal seeds, equal weights).
        crop_size: (H, W) of the person crops; None = 1024x768 for released models and
            256x192 for ``tiny`` (random weights gain nothing from full-size crops, and the
            CPU test suite stays fast).
        cpu_threads: torch intra-op threads on a CPU device (Ray limits an actor to the
            CPUs it reserved; inference is the bottleneck stage, so it may use more).
    """

    size: str = "tiny"
    weights: str = "hub"
    fmt: str = "original"
    num_keypoints: int = 308
    device: str | None = None
    dtype: str | None = None
    compile: bool | CompileMode = "off"
    channels_last: bool = False
    flip_test: bool = False
    seed: int = 0
    crop_size: tuple[int, int] | None = None
    cpu_threads: int | None = None

    def __post_init__(self) -> None:  # one key per mode: True and "default" are one model
        object.__setattr__(self, "compile", compile_mode(self.compile))

    @property
    def resolved_crop_size(self) -> tuple[int, int]:
        if self.crop_size is not None:
            return self.crop_size
        return TINY_CROP if self.size == "tiny" else INPUT_SIZE

    @property
    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True, slots=True, kw_only=True)
class InferSpec:
    """What one job runs: a model (``model``, the pool key), the job's tasks and dense mode
    (request parameters of every call), and the forward batch of an actor made for the job.

    Args:
        tasks: any of pose, seg, depth, normal.
        model: the model's identity.
        dense_mode: ``crop`` (dense tasks on person crops, composited) or ``frame`` (on the
            whole frame, as the official demos); see ``models.analyze.Analyzer``.
        batch_size: crops per forward of an actor made for this job alone (a pooled actor's
            is the pool's).
        batch_deadline_ms: longest a crop waits for crops of other calls (other frame
            batches, other jobs) before its forward runs anyway.
    """

    tasks: tuple[str, ...]
    model: ModelSpec = ModelSpec()
    dense_mode: DenseMode = "crop"
    batch_size: int = 8
    batch_deadline_ms: float = 10.0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("an InferSpec needs at least one task")

    @property
    def size(self) -> str:
        return self.model.size

    @property
    def device(self) -> str | None:
        return self.model.device

    @property
    def resolved_crop_size(self) -> tuple[int, int]:
        return self.model.resolved_crop_size

    @property
    def resolved_device(self) -> str:
        return self.model.resolved_device


def _checkpoint_source(key: ModelSpec, task: str) -> str:
    if key.weights == "hub":
        suffix = "" if key.fmt == "original" else f"-{key.fmt}"
        return f"facebook/sapiens-{task}-{key.size}{suffix}"
    ref = hub_ref(task, key.size, key.fmt)
    for name in ref.filenames:
        if (Path(key.weights) / name).is_file():
            return str(Path(key.weights) / name)
    raise FileNotFoundError(f"none of {list(ref.filenames)} is in {key.weights}")


def runtime_spec(key: ModelSpec, batch_size: int) -> RuntimeSpec:
    return RuntimeSpec(
        device=key.resolved_device,
        dtype=key.dtype,
        compile=key.compile,
        batch_size=batch_size,
        channels_last=key.channels_last,
    )


def model_facts(key: ModelSpec, groups: list[Predictor], tasks: tuple[str, ...]) -> dict[str, Any]:
    """Names, sizes and checkpoint provenance of the groups serving ``tasks``, for the store's
    attributes (a part of a group that serves no task of the job is left out)."""
    parts = {"backbone", *tasks}
    return {
        "size": key.size,
        "tasks": list(tasks),
        "random_weights": key.size == "tiny",
        "seed": key.seed,
        "checkpoints": {
            part: info.to_dict()
            for g in groups
            if set(g.model.tasks) & set(tasks)
            for part, info in g.model.checkpoints.items()
            if part in parts
        },
    }


def build_groups(key: ModelSpec, tasks: tuple[str, ...], batch_size: int) -> list[Predictor]:
    """One predictor per backbone group serving ``tasks``: the tiny model is one group with
    every head (its weights do not depend on ``tasks``); released checkpoints each carry their
    own backbone, so they form one group per task."""
    runtime = runtime_spec(key, batch_size)
    if key.size == "tiny":
        torch.manual_seed(key.seed)
        return [
            Predictor(build_model(TINY_TASKS, "tiny", num_keypoints=key.num_keypoints), runtime)
        ]
    return [Predictor(load_checkpoint(_checkpoint_source(key, t), task=t), runtime) for t in tasks]
