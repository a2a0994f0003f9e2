"""A backbone group: one Sapiens or Sapiens2 backbone and the task heads that share its
features."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.backbone import SapiensViT, build_backbone
from models.backbone2 import Sapiens2ViT, build_backbone2
from models.heads import build_head
from models.spec import FAMILIES
from models.spec2 import SAPIENS2_INPUT_SIZE, SAPIENS2_TASKS

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

    With no heads (the pretrain model) the output is ``{"features": (B, C, h, w)}``. A head
    that returns a pair (the Sapiens2 pointmap head) gives two entries: ``pointmap``
    (B, 3, H, W) and ``pointmap_scale`` (B, 1).

    Args:
        backbone: the shared trunk (``SapiensViT`` or ``Sapiens2ViT``).
        heads: task name -> head; every head reads the same feature map.
        checkpoints: provenance of the weights, per part (``backbone`` and each task).
    """

    def __init__(
        self,
        backbone: SapiensViT | Sapiens2ViT,
        heads: Mapping[str, nn.Module],
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

    @property
    def family(self) -> str:
        """``sapiens`` or ``sapiens2``."""
        return self.backbone.spec.family

    def forward(self, images: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Raw outputs of the heads named in ``tasks`` (default: every head); the backbone
        runs once for all of them."""
        feats = self.backbone(images)
        if not self.heads:
            return {"features": feats}
        wanted = self.heads.keys() if tasks is None else [t for t in self.heads if t in tasks]
        out: dict[str, Tensor] = {}
        for task in wanted:
            result = self.heads[task](feats)
            if isinstance(result, tuple):
                out[task], out[f"{task}_scale"] = result
            else:
                out[task] = result
        return out


def build_model(
    tasks: Iterable[str],
    size: str,
    *,
    family: str = "sapiens",
    backbone_task: str | None = None,
    num_keypoints: int = 308,
    input_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SapiensModel:
    """A randomly initialised group (or an empty shell on ``device="meta"``).

    Args:
        tasks: heads to attach; Sapiens: any of ``pose``, ``seg``, ``depth``, ``normal``;
            Sapiens2: any of ``pose``, ``seg``, ``normal``, ``pointmap``; empty for the
            pretrain feature extractor.
        size: Sapiens: ``tiny``, ``0.3b``, ``0.6b``, ``1b`` or ``2b``; Sapiens2: one of
            ``models.spec2.SAPIENS2_SIZES``.
        family: ``sapiens`` or ``sapiens2``.
        backbone_task: Sapiens only: which task family's backbone variant (patch padding, cls
            token) to build; defaults to the first task, or ``pretrain`` when there are none.
        num_keypoints: pose keypoint count (Sapiens: 308, 133 or 17).
        input_size: Sapiens2 only: (H, W) the pointmap scale branch is sized for (default
            1024x768, as released).
        device: parameter device.
        dtype: parameter dtype.

    Raises:
        ValueError: unknown family, size or task, or an option of the other family.
    """
    tasks = tuple(dict.fromkeys(tasks))
    if "pretrain" in tasks:
        raise ValueError("'pretrain' has no head: pass tasks=() for the feature extractor")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(FAMILIES)}")
    dd = {"device": device, "dtype": dtype}
    if family == "sapiens2":
        backbone, heads = _sapiens2_parts(tasks, size, backbone_task, num_keypoints, input_size, dd)
    else:
        if input_size is not None:
            raise ValueError("input_size applies to Sapiens2 models only")
        variant = backbone_task or (tasks[0] if tasks else "pretrain")
        backbone = build_backbone(variant, size, **dd)
        heads = {t: build_head(t, size, num_keypoints=num_keypoints, **dd) for t in tasks}
    info = CheckpointInfo(source="random")
    return SapiensModel(backbone, heads, checkpoints={p: info for p in ("backbone", *tasks)})


def _sapiens2_parts(
    tasks: tuple[str, ...],
    size: str,
    backbone_task: str | None,
    num_keypoints: int,
    input_size: tuple[int, int] | None,
    dd: Mapping[str, object],
) -> tuple[Sapiens2ViT, dict[str, nn.Module]]:
    if backbone_task is not None:
        raise ValueError("Sapiens2 has one backbone for every task: backbone_task does not apply")
    if bad := [t for t in tasks if t not in SAPIENS2_TASKS]:
        heads = [t for t in SAPIENS2_TASKS if t != "pretrain"]
        raise ValueError(f"Sapiens2 has no {bad} head; its heads are {heads}")
    backbone = build_backbone2(size, **dd)  # type: ignore[arg-type]
    heads = {
        t: build_head(
            t,
            size,
            family="sapiens2",
            num_keypoints=num_keypoints,
            input_size=input_size or SAPIENS2_INPUT_SIZE,
            **dd,  # type: ignore[arg-type]
        )
        for t in tasks
    }
    return backbone, heads
