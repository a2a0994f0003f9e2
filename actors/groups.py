"""Which model a Sapiens actor holds (``ModelSpec``), what one job asks of it (``InferSpec``),
and how its backbone groups are built and described (checkpoints, random tiny weights,
provenance for the store)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import build_model, licence, load_checkpoint, seg_classes
from models.analyze import DERIVED_TASKS, DenseMode
from models.errors import CheckpointError
from models.hub import HUB_POSE_KEYPOINTS, hub_ref, released_pose_files
from models.runtime import CompileMode, Predictor, RuntimeSpec, compile_mode
from models.sapiens import SapiensModel
from models.spec import INPUT_SIZE, SIZES

__all__ = [
    "FAMILY_SIZES",
    "FAMILY_TASKS",
    "MODEL_NAMES",
    "TINY_CROP",
    "TINY_TASKS",
    "InferSpec",
    "ModelSpec",
    "announce_licence",
    "build_groups",
    "is_trunk",
    "keypoints_problem",
    "model_facts",
    "parse_model_name",
    "runtime_spec",
]

logger = logging.getLogger(__name__)

TINY_CROP = (256, 192)


#: Tasks of the tiny model: it always has every head, so its weights for a seed do not depend
#: on which tasks a job asks for (a job's tasks choose the heads that run, not the weights).
TINY_TASKS: tuple[str, ...] = ("pose", "seg", "depth", "normal")
#: Heads of each family's tiny model (Sapiens2 has no depth head).
_TINY_HEADS: dict[str, tuple[str, ...]] = {
    "sapiens": TINY_TASKS,
    "sapiens2": ("pose", "seg", "normal", "pointmap"),
}
#: Tasks each model family serves: Sapiens2's depth is its pointmap's metric z
#: (``models.analyze.DERIVED_TASKS``).
FAMILY_TASKS: dict[str, tuple[str, ...]] = {
    "sapiens": TINY_TASKS,
    "sapiens2": ("pose", "seg", "depth", "normal", "pointmap"),
}


#: Sizes with released task heads (or random tiny weights) per family: what a job can run.
FAMILY_SIZES: dict[str, tuple[str, ...]] = {
    "sapiens": SIZES,
    "sapiens2": ("tiny", "0.4b", "0.8b", "1b", "5b"),
}
#: Model names a job or the CLI takes: ``0.3b`` (Sapiens) or ``sapiens2-0.4b``.
MODEL_NAMES: tuple[str, ...] = (
    *FAMILY_SIZES["sapiens"],
    *(f"sapiens2-{s}" for s in FAMILY_SIZES["sapiens2"]),
)


def parse_model_name(name: str) -> tuple[str, str]:
    """``0.3b`` -> (``sapiens``, ``0.3b``); ``sapiens2-0.4b`` -> (``sapiens2``, ``0.4b``).

    Raises:
        ValueError: a name of no family and size in ``MODEL_NAMES``.
    """
    family, _, size = name.partition("-") if name.startswith("sapiens") else ("", "", name)
    family = family or "sapiens"
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODEL_NAMES)}")
    return family, size


def keypoints_problem(family: str, size: str, weights: str, num_keypoints: int) -> str | None:
    """Why a model cannot give ``num_keypoints`` pose keypoints (one line), or None.

    The tiny model takes any of 308, 133 and 17; released Sapiens2 pose models predict 308;
    released Sapiens models 308 from the hub, 133 and 17 from the files SPEC §8 names, which
    no facebook repository holds, so they must be in a weights directory.
    """
    if num_keypoints not in (308, 133, 17):
        return f"expected 308, 133 or 17 keypoints, got {num_keypoints!r}"
    if size == "tiny" or num_keypoints == HUB_POSE_KEYPOINTS:
        return None
    if family == "sapiens2":
        return f"released Sapiens2 pose models predict 308 keypoints, not {num_keypoints}"
    if weights == "hub":
        try:
            name = released_pose_files(size, num_keypoints)[0]
        except FileNotFoundError as e:  # CheckpointNotFoundError: none at this size
            return str(e)
        return (
            f"{num_keypoints} keypoints at {size}: facebook's hub repositories hold 308-keypoint "
            f"pose files only; put {name} in a directory and pass it as the weights (--weights DIR)"
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """Which model a Sapiens actor holds: weights, precision and input size. Actors are pooled
    by this key; the jobs bound to one actor may ask for different tasks and dense modes.

    Args:
        size: ``tiny`` (random weights from ``seed``) or a released size of ``family``.
        family: ``sapiens`` or ``sapiens2``.
        weights: ``hub``, a directory holding the released checkpoint files, or a trunk
            ``.safetensors`` file: one group for all its tasks (docs/trunk.md).
        fmt: hub format (``original``, ``torchscript``, ``bfloat16``).
        num_keypoints: pose keypoint set: 308, 133 or 17. The tiny model is built with it; a
            released Sapiens model loads the checkpoint of that set (133 and 17 from a weights
            directory only: facebook's hub repositories hold the 308-keypoint files); released
            Sapiens2 pose models are 308 only.
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
    family: str = "sapiens"
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
        if self.size not in FAMILY_SIZES.get(self.family, ()):
            msg = f"unknown model {self.family} {self.size!r}; expected one of {list(MODEL_NAMES)}"
            raise ValueError(msg)
        if problem := keypoints_problem(self.family, self.size, self.weights, self.num_keypoints):
            raise ValueError(problem)

    @property
    def resolved_crop_size(self) -> tuple[int, int]:
        if self.crop_size is not None:
            return self.crop_size
        return TINY_CROP if self.size == "tiny" else INPUT_SIZE

    @property
    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this model serves."""
        return FAMILY_TASKS[self.family]

    @property
    def name(self) -> str:
        """``0.3b``, ``tiny`` (Sapiens) or ``sapiens2-0.4b``, ``sapiens2-tiny``."""
        return self.size if self.family == "sapiens" else f"{self.family}-{self.size}"

    def heads_for(self, tasks: tuple[str, ...]) -> tuple[str, ...]:
        """The heads that serve ``tasks`` (a derived task by its source head), in order."""
        own = _TINY_HEADS[self.family]
        heads = (t if t in own else DERIVED_TASKS.get(t, t) for t in tasks)
        return tuple(dict.fromkeys(heads))


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
        return f"facebook/{key.family}-{task}-{key.size}{suffix}"
    if task == "pose" and key.family == "sapiens":
        names = released_pose_files(key.size, key.num_keypoints, key.fmt)
    else:
        names = hub_ref(task, key.size, key.fmt, family=key.family).filenames
    for name in names:
        if (Path(key.weights) / name).is_file():
            return str(Path(key.weights) / name)
    raise FileNotFoundError(f"none of {list(names)} is in {key.weights}")


def _load_group(key: ModelSpec, task: str) -> SapiensModel:
    """The released checkpoint of ``task``; a pose head of another keypoint set than
    ``key.num_keypoints`` is refused."""
    source = _checkpoint_source(key, task)
    model = load_checkpoint(source, task=task)
    if task == "pose":
        got = model.heads["pose"].spec.out_dim
        if got != key.num_keypoints:
            msg = f"{source}: expected a {key.num_keypoints}-keypoint pose head, got {got}"
            raise CheckpointError(msg)
    return model


def is_trunk(weights: str) -> bool:
    """Whether ``weights`` names a trunk checkpoint file (``sapiens-stream trunk build``)."""
    return weights.endswith(".safetensors") and Path(weights).is_file()


def _load_trunk(key: ModelSpec, tasks: tuple[str, ...]) -> SapiensModel:
    from models.trunk import load_trunk

    trunk = load_trunk(key.weights)
    if (trunk.family, trunk.size) != (key.family, key.size):
        msg = f"{key.weights}: a {trunk.family} {trunk.size} trunk, but the job asks for {key.name}"
        raise CheckpointError(msg)
    if missing := [t for t in key.heads_for(tasks) if t not in trunk.tasks]:
        raise CheckpointError(f"{key.weights}: the trunk has no {missing} branch: {trunk.tasks}")
    return trunk  # type: ignore[return-value]


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
    heads = set(key.heads_for(tasks))
    parts = {"backbone", *heads}
    terms = licence(key.family)
    return {
        "family": key.family,
        "model": key.name,
        "name": _entry_name(key, groups),
        "trunk": _trunk_manifest(key, groups),
        "size": key.size,
        "tasks": list(tasks),
        "random_weights": key.size == "tiny" and not is_trunk(key.weights),
        "seed": key.seed,
        "licence": {"name": terms.name, "summary": terms.summary},
        "seg_classes": list(seg_classes(key.family).names),
        "derived": {t: DERIVED_TASKS[t] for t in tasks if t not in heads and t in DERIVED_TASKS},
        "checkpoints": {
            part: info.to_dict()
            for g in groups
            if set(g.model.tasks) & heads
            for part, info in g.model.checkpoints.items()
            if part in parts
        },
    }


def _trunk_manifest(key: ModelSpec, groups: list[Predictor]) -> dict[str, Any] | None:
    """A trunk's manifest (teachers and their hashes, k, errors, distillation report), or
    None for released or random weights."""
    if not is_trunk(key.weights):
        return None
    manifest = next((getattr(g.model, "manifest", None) for g in groups), None)
    return None if manifest is None else manifest.to_dict()


def _entry_name(key: ModelSpec, groups: list[Predictor]) -> str:
    """The store's model entry name: ``sapiens-0.3b``, ``sapiens2-0.4b``, or for a trunk
    ``sapiens-0.3b-trunk-k12`` (its first k blocks shared by its tasks)."""
    name = f"{key.family}-{key.size}"
    k = next((getattr(g.model, "k", None) for g in groups if is_trunk(key.weights)), None)
    return name if k is None else f"{name}-trunk-k{k}"


def build_groups(key: ModelSpec, tasks: tuple[str, ...], batch_size: int) -> list[Predictor]:
    """One predictor per backbone group serving ``tasks``: the tiny model is one group with
    every head (its weights do not depend on ``tasks``); released checkpoints each carry their
    own backbone, so they form one group per task."""
    runtime = runtime_spec(key, batch_size)
    if key.family == "sapiens2":
        announce_licence(key.family)
    if is_trunk(key.weights):  # one group: a trunk checkpoint (docs/trunk.md)
        return [Predictor(_load_trunk(key, tasks), runtime)]
    if key.size == "tiny":
        torch.manual_seed(key.seed)
        extra = {"input_size": key.resolved_crop_size} if key.family == "sapiens2" else {}
        model = build_model(
            _TINY_HEADS[key.family],
            "tiny",
            family=key.family,
            num_keypoints=key.num_keypoints,
            **extra,  # type: ignore[arg-type]
        )
        return [Predictor(model, runtime)]
    return [Predictor(_load_group(key, t), runtime) for t in key.heads_for(tasks)]


_announced: set[str] = set()


def announce_licence(family: str) -> None:
    """Log the licence of ``family``'s weights, once per process (the first time a model of
    the family is built here)."""
    if family in _announced:
        return
    _announced.add(family)
    terms = licence(family)
    logger.warning("%s weights come under the %s: %s", family, terms.name, terms.summary)
