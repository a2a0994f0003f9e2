"""Task heads. Sapiens uses one deconv/conv decoder for every task, with its own widths;
Sapiens2 keeps it for pose and seg and adds PixelShuffle decoders for normal and pointmap."""

from __future__ import annotations

import torch
from torch import nn

from models.heads.dense import ConvStage, DenseHead
from models.heads.shuffle import PointmapHead, ShuffleHead
from models.spec import HeadSpec, head_spec
from models.spec2 import SAPIENS2_INPUT_SIZE, ShuffleHeadSpec, head_spec2

__all__ = ["ConvStage", "DenseHead", "PointmapHead", "ShuffleHead", "build_head", "head_from_spec"]


def head_from_spec(
    spec: HeadSpec | ShuffleHeadSpec,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The head module a spec describes: ``DenseHead``, ``ShuffleHead`` or ``PointmapHead``."""
    if isinstance(spec, HeadSpec):
        return DenseHead(spec, device=device, dtype=dtype)
    cls = PointmapHead if spec.scale_dims else ShuffleHead
    return cls(spec, device=device, dtype=dtype)


def build_head(
    task: str,
    size: str,
    *,
    family: str = "sapiens",
    num_keypoints: int = 308,
    input_size: tuple[int, int] = SAPIENS2_INPUT_SIZE,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The head of the official ``task`` checkpoints for a ``size`` backbone.

    Args:
        task: Sapiens: ``pose``, ``seg``, ``depth`` or ``normal``; Sapiens2: ``pose``,
            ``seg``, ``normal`` or ``pointmap``.
        size: backbone size (sets the input width).
        family: ``sapiens`` or ``sapiens2``.
        num_keypoints: pose output channels (Sapiens: 308, 133 or 17).
        input_size: (H, W) the Sapiens2 pointmap scale branch is sized for.
        device: parameter device (``"meta"`` allocates nothing).
        dtype: parameter dtype.
    """
    if family == "sapiens2":
        spec2 = head_spec2(task, size, num_keypoints=num_keypoints, input_size=input_size)
        return head_from_spec(spec2, device=device, dtype=dtype)
    if family != "sapiens":
        raise ValueError(f"unknown model family {family!r}; expected 'sapiens' or 'sapiens2'")
    spec = head_spec(task, size, num_keypoints=num_keypoints)
    return DenseHead(spec, device=device, dtype=dtype)
