"""Task heads. Every Sapiens task uses the same deconv/conv decoder with its own widths."""

from __future__ import annotations

import torch

from models.heads.dense import ConvStage, DenseHead
from models.spec import head_spec

__all__ = ["ConvStage", "DenseHead", "build_head"]


def build_head(
    task: str,
    size: str,
    *,
    num_keypoints: int = 308,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> DenseHead:
    """The head of the official ``task`` checkpoints for a ``size`` backbone.

    Args:
        task: ``pose``, ``seg``, ``depth`` or ``normal``.
        size: backbone size (sets the input width).
        num_keypoints: 308, 133 or 17 (pose only).
        device: parameter device (``"meta"`` allocates nothing).
        dtype: parameter dtype.
    """
    spec = head_spec(task, size, num_keypoints=num_keypoints)
    return DenseHead(spec, device=device, dtype=dtype)
