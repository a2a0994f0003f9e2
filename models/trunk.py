"""Branch-point sharing: task models whose first ``k`` backbone blocks are one shared set.

The released Sapiens checkpoints carry one fine-tuned backbone per task. A :class:`TrunkModel`
holds one such model per task with their stems (patch embedding, position table) and blocks
``[0, k)`` replaced by one shared set: the shared prefix runs once per crop (once per patch
padding: Sapiens' pose/normal backbones pad the patch conv by 2, seg/depth by 0), and each
task's blocks ``[k, depth)``, final norm and head branch from its output, in one forward.

A trunk file is safetensors: ``shared.<backbone key>`` for the shared prefix,
``task.<task>.<model key>`` for each task's suffix and head, and a ``trunk`` metadata entry
(JSON manifest: family, size, k, the shared choice, each teacher's source and SHA-256, the
errors ``analyze`` measured if given).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from models._formats import sha256_of
from models._trunk_run import prefix, shared_key, suffix
from models.backbone2 import build_backbone2
from models.checkpoint import load_state_dict_strict
from models.errors import CheckpointError
from models.heads import head_from_spec
from models.sapiens import CheckpointInfo, SapiensModel, build_model
from models.spec2 import head_spec2

__all__ = [
    "TRUNK_FORMAT",
    "TrunkManifest",
    "TrunkModel",
    "build_trunk",
    "load_trunk",
    "read_manifest",
    "save_trunk",
    "teacher_facts",
    "teacher_shell",
]

TRUNK_FORMAT = "sapiens-stream-trunk/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkManifest:
    """What a trunk file holds and where it came from.

    Args:
        family: ``sapiens`` or ``sapiens2``.
        size: backbone size of every teacher.
        k: blocks ``[0, k)`` (and, for k >= 1, the stem) are shared.
        shared: where the shared weights came from: ``mean``, ``pretrained`` or a task.
        teachers: task -> ``{"source", "sha256", "backbone_task", "num_keypoints"}``.
        errors: task -> error in task units at ``k`` (from ``trunk analyze``), if measured.
        distillation: the report of ``sapiens-stream distill``, if the trunk was distilled.
    """

    family: str
    size: str
    k: int
    shared: str
    teachers: dict[str, dict[str, Any]]
    errors: dict[str, float] = field(default_factory=dict)
    distillation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"trunk-k{self.k}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRUNK_FORMAT,
            "family": self.family,
            "size": self.size,
            "k": self.k,
            "shared": self.shared,
            "teachers": self.teachers,
            "errors": self.errors,
            **({"distillation": self.distillation} if self.distillation else {}),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrunkManifest:
        if raw.get("format") != TRUNK_FORMAT:
            raise CheckpointError(
                f"expected trunk format {TRUNK_FORMAT!r}, got {raw.get('format')!r}"
            )
        keys = ("family", "size", "k", "shared", "teachers", "errors", "distillation")
        return cls(**{k: raw[k] for k in keys if k in raw})


class TrunkModel(nn.Module):
    """Image batch (B, 3, H, W) -> ``{task: raw head output}``, as a ``SapiensModel`` group.

    Args:
        branches: task -> one-task Sapiens model whose shared parameters (stem and blocks
            ``[0, k)``) are already the shared values; they are tied here.
        k: the branch point.
        manifest: provenance; ``checkpoints`` of every part name the trunk file.
        checkpoints: provenance per part (``backbone`` and each task).
    """

    def __init__(
        self,
        branches: Mapping[str, SapiensModel],
        k: int,
        *,
        manifest: TrunkManifest | None = None,
        checkpoints: Mapping[str, CheckpointInfo] | None = None,
    ) -> None:
        super().__init__()
        models = list(branches.values())
        _check_branches(branches, k)
        self.k = k
        self.branches = nn.ModuleDict(dict(branches))
        self.manifest = manifest
        self.checkpoints: dict[str, CheckpointInfo] = dict(checkpoints or {})
        _tie(models, k)
        groups: dict[int, list[str]] = {}
        for i, (task, model) in enumerate(branches.items()):  # k = 0: no stem is shared
            groups.setdefault(_padding(model) if k else -1 - i, []).append(task)
        self.prefix_groups: tuple[tuple[str, ...], ...] = tuple(tuple(g) for g in groups.values())

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.branches.keys())

    @property
    def heads(self) -> dict[str, nn.Module]:
        """Task -> head module, as a ``SapiensModel``'s (read-only view)."""
        return {task: model.heads[task] for task, model in self.branches.items()}

    @property
    def family(self) -> str:
        return next(iter(self.branches.values())).family  # type: ignore[no-any-return]

    @property
    def size(self) -> str:
        return next(iter(self.branches.values())).size  # type: ignore[no-any-return]

    def forward(self, images: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Raw outputs of the heads in ``tasks`` (default: all); the shared prefix runs once
        per patch padding among them."""
        wanted = set(self.branches) if tasks is None else set(tasks)
        out: dict[str, Tensor] = {}
        for group in self.prefix_groups:
            run = [t for t in group if t in wanted]
            if not run:
                continue
            first = self.branches[run[0]].backbone
            tokens, grid, context = prefix(first, images, self.k)
            for task in run:
                model = self.branches[task]
                feats = suffix(model.backbone, tokens, grid, self.k, context)
                result = model.heads[task](feats)
                if isinstance(result, tuple):
                    out[task], out[f"{task}_scale"] = result
                else:
                    out[task] = result
        return out


def _check_branches(branches: Mapping[str, SapiensModel], k: int) -> None:
    if not branches:
        raise ValueError("a trunk needs at least one task model, got none")
    models = list(branches.values())
    for task, model in branches.items():
        if model.tasks != (task,):
            raise ValueError(f"branch {task!r} must be a one-task model, got tasks {model.tasks}")
    kinds = {(m.family, m.size) for m in models}
    if len(kinds) != 1:
        raise ValueError(f"teachers must share one family and size, got {sorted(kinds)}")
    depth = len(models[0].backbone.blocks)
    if not 0 <= k <= depth:
        raise ValueError(f"k must be in [0, {depth}], got {k}")


def _tie(models: Sequence[SapiensModel], k: int) -> None:
    """Make every model's shared parameters the first model's objects (equal values assumed)."""
    first = dict(models[0].backbone.named_parameters())
    for model in models[1:]:
        for name, _ in list(model.backbone.named_parameters()):
            if shared_key(name, k):
                owner, _, attr = name.rpartition(".")
                module = model.backbone.get_submodule(owner) if owner else model.backbone
                setattr(module, attr, first[name])


def teacher_facts(teacher: SapiensModel) -> dict[str, Any]:
    """How to rebuild ``teacher``'s shape, and where its weights came from."""
    task = teacher.tasks[0]
    info = teacher.checkpoints.get(task) or CheckpointInfo(source="random")
    spec = teacher.heads[task].spec
    facts: dict[str, Any] = {
        "backbone_task": task if teacher.family == "sapiens" else None,
        "num_keypoints": int(spec.out_dim) if task == "pose" else 308,
        "source": info.source,
        "sha256": info.sha256,
    }
    if task == "pointmap":
        facts["scale_cells"] = int(spec.scale_cells)
    return facts


def teacher_shell(
    family: str, size: str, task: str, facts: Mapping[str, Any], *, device: str = "meta"
) -> SapiensModel:
    """An empty one-task model of the teacher's shape (``teacher_facts``)."""
    if family == "sapiens2":
        spec = head_spec2(
            task,
            size,
            num_keypoints=int(facts["num_keypoints"]),
            scale_cells=facts.get("scale_cells"),
        )
        head = head_from_spec(spec, device=device)  # type: ignore[arg-type]
        return SapiensModel(build_backbone2(size, device=device), {task: head})
    return build_model(
        (task,),
        size,
        backbone_task=facts["backbone_task"],
        num_keypoints=int(facts["num_keypoints"]),
        device=device,
    )


def _padding(model: SapiensModel) -> int:
    """The patch padding of the model's backbone (Sapiens2: always 0)."""
    return int(getattr(model.backbone.spec, "patch_padding", 0))


def build_trunk(
    teachers: Sequence[SapiensModel],
    k: int,
    shared_state: Mapping[str, Tensor],
    *,
    manifest: TrunkManifest | None = None,
) -> TrunkModel:
    """A trunk from one-task teachers (copied, never modified) and the shared values.

    Args:
        teachers: one-task models of one family and size.
        k: branch point.
        shared_state: backbone key -> value for every shared key (see ``shared_key``).
        manifest: provenance to attach.
    """
    branches: dict[str, SapiensModel] = {}
    for teacher in teachers:
        model = copy.deepcopy(teacher)
        with torch.no_grad():
            for name, param in model.backbone.named_parameters():
                if shared_key(name, k):
                    param.copy_(shared_state[name])
        branches[teacher.tasks[0]] = model
    if len(branches) != len(teachers):
        raise ValueError(f"teachers must have distinct tasks, got {[t.tasks for t in teachers]}")
    return TrunkModel(branches, k, manifest=manifest)


def trunk_state_dict(trunk: TrunkModel) -> dict[str, Tensor]:
    """``shared.<backbone key>`` once, ``task.<task>.<model key>`` for the rest."""
    out: dict[str, Tensor] = {}
    for task, model in trunk.branches.items():
        for name, value in model.state_dict().items():
            inner = name.removeprefix("backbone.")
            if name.startswith("backbone.") and shared_key(inner, trunk.k):
                out.setdefault(f"shared.{inner}", value)
            else:
                out[f"task.{task}.{name}"] = value
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def save_trunk(trunk: TrunkModel, path: str | Path) -> Path:
    """Write ``trunk`` (it must carry a manifest) as safetensors with the manifest inside."""
    if trunk.manifest is None:
        raise ValueError("a trunk needs a manifest to be saved")
    path = Path(path)
    meta = {"trunk": json.dumps(trunk.manifest.to_dict())}
    save_file(trunk_state_dict(trunk), str(path), metadata=meta)
    return path


def read_manifest(path: str | Path) -> TrunkManifest:
    """The manifest of a trunk file.

    Raises:
        CheckpointError: not a safetensors file, or one without a trunk manifest.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if "trunk" not in meta:
        raise CheckpointError(
            f"{path}: no trunk manifest; build one with 'sapiens-stream trunk build'"
        )
    return TrunkManifest.from_dict(json.loads(meta["trunk"]))


def load_trunk(path: str | Path, *, device: torch.device | str | None = None) -> TrunkModel:
    """Load a trunk file strictly; every part's provenance names the file and its SHA-256.

    Raises:
        CheckpointError: unreadable file, no manifest, or keys that do not fit.
    """
    manifest = read_manifest(path)
    state = load_file(str(path))
    branches: dict[str, SapiensModel] = {}
    shared = {k.removeprefix("shared."): v for k, v in state.items() if k.startswith("shared.")}
    for task, facts in manifest.teachers.items():
        model = teacher_shell(manifest.family, manifest.size, task, facts)
        prefix_ = f"task.{task}."
        own = {k.removeprefix(prefix_): v for k, v in state.items() if k.startswith(prefix_)}
        own.update({f"backbone.{k}": v for k, v in shared.items()})
        load_state_dict_strict(model, own, origin=f"{path} (trunk, task {task})")
        branches[task] = model
    used = {k for k in state if k.startswith("shared.")} | {
        k for k in state for t in manifest.teachers if k.startswith(f"task.{t}.")
    }
    if extra := sorted(state.keys() - used)[:10]:
        raise CheckpointError(f"{path}: unexpected trunk keys {extra}")
    digest, head = sha256_of(Path(path)), f"{path} ({manifest.name}, shared={manifest.shared}"
    if steps := manifest.distillation.get("steps"):
        head += f", distilled {steps} steps"
    trunk = TrunkModel(branches, manifest.k, manifest=manifest)
    trunk.checkpoints = {
        part: CheckpointInfo(
            source=_source(head, manifest, part), path=str(path), fmt="trunk", sha256=digest
        )
        for part in ("backbone", *trunk.tasks)
    }
    return trunk.to(device or "cpu").eval()


def _source(head: str, manifest: TrunkManifest, part: str) -> str:
    """The trunk file, k and shared choice, and the teacher(s) of ``part`` with their SHA-256."""
    tasks = list(manifest.teachers) if part == "backbone" else [part]
    named = [
        f"{t}={manifest.teachers[t]['source']} sha256:{manifest.teachers[t]['sha256']}"
        for t in tasks
    ]
    return f"{head}; teachers {', '.join(named)})"
