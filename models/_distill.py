"""Distilling a trunk: one loss per task against its teacher's outputs, the parameters a run
trains, and the held-out agreement of a trunk with its teachers (pure torch).

Losses, each in its task's own units (``task_loss``):

- pose: mean squared error of the heatmaps;
- seg: KL divergence of the trunk's softmax from the teacher's;
- depth: L1 of the relative depth;
- normal: 1 - cosine of the normal vectors;
- pointmap (Sapiens2): L1 of the metric points (pointmap / scale).

Agreement (``agreement``), measured against the teacher's outputs as ground truth:

- pose: PCK@0.05, the fraction of keypoints (UDP-decoded) within 0.05 x the crop's diagonal of
  the teacher's; higher is better;
- seg: mIoU against the teacher's arg-max labels, over the classes either predicts; higher is
  better;
- depth, normal, pointmap: ``trunk analyze``'s errors (mean absolute depth difference, mean
  angle in degrees, mean metric point distance); lower is better.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models._trunk_analyze import task_error
from models._trunk_run import shared_key
from models.postprocess import udp_decode

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "agreement",
    "distill_loss",
    "distill_report",
    "evaluate",
    "task_loss",
    "teacher_outputs",
    "throughput",
    "trainable_parameters",
]

Train = Literal["prefix", "suffixes"]

#: The agreement metric of each task.
METRIC_NAMES: dict[str, str] = {
    "pose": "PCK@0.05 of the crop diagonal",
    "seg": "mIoU against the teacher's labels",
    "depth": "mean absolute depth difference",
    "normal": "mean angle between normals, degrees",
    "pointmap": "mean distance between metric points, metres",
}
HIGHER_IS_BETTER = frozenset({"pose", "seg"})
PCK_FRACTION = 0.05


def _metric(out: Mapping[str, Tensor], task: str) -> Tensor:
    """Pointmap / scale (B, 3, h, w): the metric points."""
    return out[task].float() / out[f"{task}_scale"].float().view(-1, 1, 1, 1)


def task_loss(task: str, out: Mapping[str, Tensor], ref: Mapping[str, Tensor]) -> Tensor:
    """The loss of ``out`` against the teacher's ``ref`` for ``task`` (a scalar)."""
    if task not in METRIC_NAMES:
        raise ValueError(f"no distillation loss for task {task!r}")
    a, b = out[task].float(), ref[task].float().detach()
    if task == "pose":
        return F.mse_loss(a, b)
    if task == "seg":
        return (
            F.kl_div(a.log_softmax(1), b.log_softmax(1), log_target=True, reduction="none")
            .sum(1)
            .mean()
        )
    if task == "normal":
        return (1 - F.cosine_similarity(a, b, dim=1, eps=1e-6)).mean()
    if task == "pointmap":
        return (_metric(out, task) - _metric(ref, task).detach()).abs().mean()
    return (a - b).abs().mean()  # depth


def distill_loss(
    out: Mapping[str, Tensor],
    refs: Mapping[str, Tensor],
    tasks: Sequence[str],
    scale: Mapping[str, float] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The sum of the tasks' losses, each divided by its ``scale`` (a run passes each loss's
    value on its first batch, so that no task's units dominate the shared prefix), and each
    loss's own value."""
    losses = {task: task_loss(task, out, refs) for task in tasks}
    scale = scale or {}
    total = torch.stack([v / max(scale.get(t, 1.0), 1e-12) for t, v in losses.items()]).sum()
    return total, {task: float(v.detach()) for task, v in losses.items()}


def trainable_parameters(trunk: nn.Module, train: Train) -> list[nn.Parameter]:
    """The parameters a run trains (each once; tied ones are one object), the others frozen:
    ``prefix``: the shared stem and blocks ``[0, k)``; ``suffixes``: every parameter."""
    if train not in ("prefix", "suffixes"):
        raise ValueError(f"--train must be prefix or suffixes, got {train!r}")
    k = trunk.k  # type: ignore[attr-defined]
    chosen: dict[int, nn.Parameter] = {}
    for model in trunk.branches.values():  # type: ignore[attr-defined]
        for name, param in model.named_parameters():
            inner = name.removeprefix("backbone.")
            if train == "suffixes" or (name.startswith("backbone.") and shared_key(inner, k)):
                chosen[id(param)] = param
    for param in trunk.parameters():
        param.requires_grad_(id(param) in chosen)
    if not chosen:
        raise ValueError("nothing to train: k = 0 shares no prefix; use --train suffixes")
    return list(chosen.values())


def _batches(crops: Tensor, batch_size: int) -> Iterator[Tensor]:
    for start in range(0, crops.shape[0], batch_size):
        yield crops[start : start + batch_size]


@torch.no_grad()
def teacher_outputs(
    teachers: Sequence[nn.Module], crops: Tensor, batch_size: int = 8
) -> dict[str, Tensor]:
    """Every teacher's outputs on ``crops``, concatenated: ``{task[, task_scale]: tensor}``."""
    parts: dict[str, list[Tensor]] = {}
    for teacher in teachers:
        for batch in _batches(crops, batch_size):
            for key, value in teacher.eval()(batch).items():
                parts.setdefault(key, []).append(value)
    return {key: torch.cat(p) for key, p in parts.items()}


def _pck(ref: Tensor, out: Tensor, crop_size: tuple[int, int]) -> float:
    a, _ = udp_decode(ref.float())
    b, _ = udp_decode(out.float())
    scale = ref.new_tensor([crop_size[1] / ref.shape[-1], crop_size[0] / ref.shape[-2]])
    dist = (((a - b) * scale) ** 2).sum(-1).sqrt()
    return float((dist <= PCK_FRACTION * math.hypot(*crop_size)).float().mean())


def _miou(ref: Tensor, out: Tensor) -> float:
    a, b = ref.argmax(1).flatten(), out.argmax(1).flatten()
    n = ref.shape[1]
    inter = torch.bincount(a[a == b], minlength=n).double()
    union = torch.bincount(a, minlength=n).double() + torch.bincount(b, minlength=n) - inter
    return float((inter[union > 0] / union[union > 0]).mean())


def agreement(
    task: str, ref: Mapping[str, Tensor], out: Mapping[str, Tensor], crop_size: tuple[int, int]
) -> float:
    """The trunk's agreement with its teacher on ``task`` (``METRIC_NAMES``)."""
    if task == "pose":
        return _pck(ref[task], out[task], crop_size)
    if task == "seg":
        return _miou(ref[task], out[task])
    return task_error(task, ref, out, crop_size)


@torch.no_grad()
def evaluate(
    trunk: nn.Module, refs: Mapping[str, Tensor], crops: Tensor, batch_size: int = 8
) -> dict[str, float]:
    """Per task: the trunk's agreement with the teachers' outputs ``refs`` on ``crops``."""
    out = teacher_outputs([trunk], crops, batch_size)
    crop_size = (crops.shape[-2], crops.shape[-1])
    return {t: agreement(t, refs, out, crop_size) for t in trunk.tasks}  # type: ignore[attr-defined]


@torch.no_grad()
def throughput(
    models: Sequence[nn.Module], crops: Tensor, *, batch_size: int = 8, min_s: float = 0.5
) -> float:
    """Crops per second through all of ``models`` (one after the other on each batch),
    measured after one warm-up batch, over at least ``min_s`` seconds."""
    models = [m.eval() for m in models]
    batches = list(_batches(crops, batch_size))
    for m in models:
        m(batches[0])
    done, t0 = 0, time.perf_counter()
    while True:
        for batch in batches:
            for m in models:
                m(batch)
            done += batch.shape[0]
        if (elapsed := time.perf_counter() - t0) >= min_s:
            return done / elapsed


def _rates(
    teachers: Sequence[nn.Module], trunk: nn.Module, crops: Tensor, rounds: int = 3
) -> tuple[float, float]:
    """Crops/s of the teachers and of the trunk: the best of ``rounds`` alternate rounds
    (the first calls of a process run slower, and a machine's load varies)."""
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        rates[0].append(throughput(teachers, crops, min_s=0.3))
        rates[1].append(throughput([trunk], crops, min_s=0.3))
    return max(rates[0]), max(rates[1])


def distill_report(
    teachers: Sequence[nn.Module], before: nn.Module, after: nn.Module, held_out: Tensor
) -> dict[str, Any]:
    """The evaluation on held-out crops: each task's agreement with its teacher before and
    after distillation, the FLOPs per crop of the teachers and of the trunk (meta device), and
    their crops/s measured here, in one process."""
    from models._trunk_analyze import flops_saved

    refs = teacher_outputs(teachers, held_out)
    crop_size = (held_out.shape[-2], held_out.shape[-1])
    flops = flops_saved(teachers, crop_size)[after.k]  # type: ignore[index, attr-defined]
    teachers_rate, trunk_rate = _rates(teachers, after, held_out)
    tasks = list(after.tasks)  # type: ignore[attr-defined]
    return {
        "held_out_crops": int(held_out.shape[0]),
        "crop_size": list(crop_size),
        "metrics": {t: METRIC_NAMES[t] for t in tasks},
        "higher_is_better": [t for t in tasks if t in HIGHER_IS_BETTER],
        "before": evaluate(before, refs, held_out),
        "after": evaluate(after, refs, held_out),
        "flops": {
            "teachers": flops["separate"],
            "trunk": flops["trunk"],
            "saved_fraction": flops["saved"] / flops["separate"],
        },
        "throughput": {
            "teachers_crops_per_s": teachers_rate,
            "trunk_crops_per_s": trunk_rate,
            "speedup": trunk_rate / teachers_rate,
        },
    }
