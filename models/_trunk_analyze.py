"""Measuring where task models can branch: weight divergence per block, each task's output
error when blocks ``[0, k)`` are shared, and the FLOPs sharing saves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from models._trunk_run import prefix, shared_key
from models.postprocess import udp_decode
from models.sapiens import SapiensModel
from models.trunk import build_trunk, teacher_facts, teacher_shell

__all__ = [
    "ERROR_UNITS",
    "branch_errors",
    "choose_k",
    "divergence",
    "flops_saved",
    "model_flops",
    "pretrained_backbone",
    "shared_state",
    "task_error",
]

#: What each task's error measures.
ERROR_UNITS: dict[str, str] = {
    "pose": "mean keypoint distance, crop pixels",
    "seg": "fraction of pixels whose label changes",
    "depth": "mean absolute depth difference",
    "normal": "mean angle between normals, degrees",
    "pointmap": "mean distance between metric points (pointmap / scale), metres",
}


def _stacked(teachers: Sequence[SapiensModel], name: str) -> Tensor:
    return torch.stack([dict(t.backbone.named_parameters())[name].detach() for t in teachers])


def shared_state(
    teachers: Sequence[SapiensModel],
    k: int,
    shared: str,
    pretrained: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Backbone key -> shared value for every key shared at ``k``.

    Args:
        teachers: one-task models of one size.
        k: branch point.
        shared: ``mean`` (of the teachers; equal tensors stay exactly themselves),
            ``pretrained`` (from ``pretrained``) or a teacher's task.
        pretrained: backbone key -> value of the pretrain model, adapted to the teachers' grid.

    Raises:
        ValueError: an unknown choice, or ``pretrained`` without weights.
    """
    tasks = [t.tasks[0] for t in teachers]
    names = [n for n, _ in teachers[0].backbone.named_parameters() if shared_key(n, k)]
    if shared == "mean":
        out = {}
        for n in names:
            s = _stacked(teachers, n)
            out[n] = s[0].clone() if bool((s == s[0]).all()) else s.mean(0)
        return out
    if shared == "pretrained":
        if pretrained is None:
            raise ValueError("--shared pretrained needs --pretrained CKPT")
        if missing := [n for n in names if n not in pretrained]:
            raise ValueError(f"the pretrained weights lack {missing[:5]}")
        return {n: pretrained[n].detach().clone() for n in names}
    if shared not in tasks:
        raise ValueError(f"--shared must be mean, pretrained or one of {tasks}, got {shared!r}")
    source = dict(teachers[tasks.index(shared)].backbone.named_parameters())
    return {n: source[n].detach().clone() for n in names}


def divergence(teachers: Sequence[SapiensModel]) -> list[dict[str, Any]]:
    """Per part (``stem``, ``block.0`` ...): relative L2 distance of the teachers' parameters to
    their mean, sqrt(mean_t |p_t - mean|^2) / |mean|, over all of the part's parameters."""
    parts: dict[str, list[str]] = {}
    for name, _ in teachers[0].backbone.named_parameters():
        if name.startswith("blocks."):
            parts.setdefault(f"block.{name.split('.')[1]}", []).append(name)
        elif shared_key(name, 1):
            parts.setdefault("stem", []).append(name)
    rows = []
    for part, names in parts.items():
        dev = ref = 0.0
        for n in names:
            s = _stacked(teachers, n).double()
            mean = s.mean(0)
            dev += float(((s - mean) ** 2).sum() / len(teachers))
            ref += float((mean**2).sum())
        rows.append({"part": part, "relative_l2": math.sqrt(dev) / max(math.sqrt(ref), 1e-30)})
    return rows


def task_error(
    task: str, ref: Mapping[str, Tensor], out: Mapping[str, Tensor], crop_size: tuple[int, int]
) -> float:
    """Error of the outputs ``out`` against the teacher's ``ref`` for ``task``, in the units
    of ``ERROR_UNITS``."""
    if task == "pointmap":
        a = ref[task].float() / ref[f"{task}_scale"].float().view(-1, 1, 1, 1)
        b = out[task].float() / out[f"{task}_scale"].float().view(-1, 1, 1, 1)
        return float((a - b).norm(dim=1).mean())
    return _dense_error(task, ref[task].float(), out[task].float(), crop_size)


def _dense_error(task: str, ref: Tensor, out: Tensor, crop_size: tuple[int, int]) -> float:
    if task == "pose":
        a, _ = udp_decode(ref)
        b, _ = udp_decode(out)
        scale = ref.new_tensor([crop_size[1] / ref.shape[-1], crop_size[0] / ref.shape[-2]])
        return float((((a - b) * scale) ** 2).sum(-1).sqrt().mean())
    if task == "seg":
        return float((ref.argmax(1) != out.argmax(1)).float().mean())
    if task == "normal":
        # atan2(|a x b|, a . b): exact 0 for equal vectors, where arccos of a cosine is not
        (a1, a2, a3), (b1, b2, b3) = ref.unbind(1), out.unbind(1)
        cross = torch.stack((a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1)).norm(dim=0)
        return float(torch.rad2deg(torch.atan2(cross, (ref * out).sum(1))).mean())
    return float((ref - out).abs().mean())


@torch.no_grad()
def branch_errors(
    teachers: Sequence[SapiensModel],
    crops: Tensor,
    shared: str,
    *,
    pretrained: Mapping[str, Tensor] | None = None,
    batch_size: int = 8,
) -> list[dict[str, float]]:
    """For k = 0 .. depth, each task's error (vs its own teacher) with blocks ``[0, k)``
    shared; row k is ``{task: error}``."""
    crop_size = (crops.shape[-2], crops.shape[-1])
    refs = [_run(t, crops, batch_size) for t in teachers]
    rows = []
    for k in range(len(teachers[0].backbone.blocks) + 1):
        trunk = build_trunk(teachers, k, shared_state(teachers, k, shared, pretrained)).eval()
        outs = _run(trunk, crops, batch_size)
        rows.append(
            {
                task: task_error(task, ref, outs, crop_size)
                for t, ref in zip(teachers, refs, strict=True)
                for task in t.tasks
            }
        )
    return rows


def _run(model: torch.nn.Module, crops: Tensor, batch_size: int) -> dict[str, Tensor]:
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, crops.shape[0], batch_size):
        for task, out in model.eval()(crops[start : start + batch_size]).items():
            parts.setdefault(task, []).append(out)
    return {task: torch.cat(p) for task, p in parts.items()}


def _meta_copy(teacher: SapiensModel) -> SapiensModel:
    return teacher_shell(teacher.family, teacher.size, teacher.tasks[0], teacher_facts(teacher))


def model_flops(model: torch.nn.Module, crop_size: tuple[int, int], *, k: int | None = None) -> int:
    """FLOPs of one crop through ``model`` (on its device: the meta device costs nothing), or
    through its backbone prefix up to block ``k`` when ``k`` is given."""
    x = torch.zeros(1, 3, *crop_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if k is None:
            model(x)
        else:
            prefix(model.backbone, x, k)  # type: ignore[arg-type]
    return int(counter.get_total_flops())


def flops_saved(
    teachers: Sequence[SapiensModel], crop_size: tuple[int, int]
) -> list[dict[str, int]]:
    """Per k: FLOPs per crop of the teachers run apart, of the trunk, and saved; the prefix
    runs once per patch padding, so each padding group of n teachers saves (n - 1) prefixes."""
    metas = [_meta_copy(t) for t in teachers]
    total = sum(model_flops(m, crop_size) for m in metas)
    groups: dict[int, list[SapiensModel]] = {}
    for m in metas:
        groups.setdefault(getattr(m.backbone.spec, "patch_padding", 0), []).append(m)
    rows = []
    for k in range(len(metas[0].backbone.blocks) + 1):
        saved = sum((len(g) - 1) * model_flops(g[0], crop_size, k=k) for g in groups.values())
        saved = saved if k else 0
        rows.append({"k": k, "separate": total, "trunk": total - saved, "saved": saved})
    return rows


def choose_k(rows: Sequence[Mapping[str, float]], tolerance: Mapping[str, float]) -> int:
    """The largest k whose error, and every smaller k's, is within ``tolerance`` for every
    task (a task without a tolerance must be exact)."""
    best = 0
    for k, errors in enumerate(rows):
        if any(e > tolerance.get(task, 0.0) for task, e in errors.items()):
            break
        best = k
    return best


def pretrained_backbone(path: str, teacher: SapiensModel) -> dict[str, Tensor]:
    """Backbone key -> value of a pretrain checkpoint of ``teacher``'s family. Sapiens: mapped,
    its position table adapted to the teacher's grid as the official load hook does (cls slot
    dropped, bicubic resize)."""
    from models._formats import read_state_dict
    from models.checkpoint import convert_official, load_checkpoint

    if teacher.family == "sapiens2":  # one backbone shape for every task: load it as it is
        model = load_checkpoint(path, task="pretrain", family="sapiens2")
        return dict(model.backbone.named_parameters())
    official, _ = read_state_dict(path)
    state = convert_official(official, teacher)
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
