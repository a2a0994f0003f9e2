"""A backbone group: one Sapiens backbone and the task heads that share its features."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.backbone import SapiensViT, build_backbone
from models.heads import DenseHead, build_head

__all__ = ["CheckpointInfo", "SapiensModel", "build_model"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """Where a model's weights came from (recorded with every result).

    Args:
        source: what the user asked for (path or hub name); ``random`` for random weights.
        path: the local file read, if any.
        fmt: ``pth``, ``safetensors``, ``torchscript``, ``export`` or ``random``.
        sha256: hex digest of the file, if any.
    """

    source: str
    path: str | None = None
    fmt: str = "random"
    sha256: str | None = None

    @property
    def random_weights(self) -> bool:
        return self.fmt == "random"

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "path": self.path,
            "format": self.fmt,
            "sha256": self.sha256,
            "random_weights": self.random_weights,
        }


class SapiensModel(nn.Module):
    """Image batch (B, 3, H, W) -> ``{task: raw head output}``; the backbone runs once.

    With no heads (the pretrain model) the output is ``{"features": (B, C, H/16, W/16)}``.

    Args:
        backbone: the shared trunk.
        heads: task name -> head; every head reads the same feature map.
        checkpoints: provenance of the weights, per part (``backbone`` and each task).
    """

    def __init__(
        self,
        backbone: SapiensViT,
        heads: Mapping[str, DenseHead],
        *,
        checkpoints: Mapping[str, CheckpointInfo] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        self.checkpoints: dict[str, CheckpointInfo] = dict(checkpoints or {})

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    @property
    def size(self) -> str:
        return self.backbone.spec.size

    def forward(self, images: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Raw outputs of the heads named in ``tasks`` (default: every head); the backbone
        runs once for all of them."""
        feats = self.backbone(images)
        if not self.heads:
            return {"features": feats}
        wanted = self.heads.keys() if tasks is None else [t for t in self.heads if t in tasks]
        return {task: self.heads[task](feats) for task in wanted}


def build_model(
    tasks: Iterable[str],
    size: str,
    *,
    backbone_task: str | None = None,
    num_keypoints: int = 308,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SapiensModel:
    """A randomly initialised group (or an empty shell on ``device="meta"``).

    Args:
        tasks: heads to attach, any of ``pose``, ``seg``, ``depth``, ``normal``; empty for
            the pretrain feature extractor.
        size: ``tiny``, ``0.3b``, ``0.6b``, ``1b`` or ``2b``.
        backbone_task: which task family's backbone variant (patch padding, cls token) to
            build; defaults to the first task, or ``pretrain`` when there are none.
        num_keypoints: pose keypoint count (308, 133 or 17).
        device: parameter device.
        dtype: parameter dtype.
    """
    tasks = tuple(dict.fromkeys(tasks))
    if "pretrain" in tasks:
        raise ValueError("'pretrain' has no head: pass tasks=() for the feature extractor")
    family = backbone_task or (tasks[0] if tasks else "pretrain")
    dd = {"device": device, "dtype": dtype}
    backbone = build_backbone(family, size, **dd)
    heads = {t: build_head(t, size, num_keypoints=num_keypoints, **dd) for t in tasks}
    info = CheckpointInfo(source="random")
    return SapiensModel(backbone, heads, checkpoints={p: info for p in ("backbone", *tasks)})
