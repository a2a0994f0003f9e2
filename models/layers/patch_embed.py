"""Patch embedding: a strided conv that turns an image into a grid of tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PatchEmbed"]


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) -> tokens (B, h*w, C) and the grid (h, w).

    Args:
        embed_dim: output width C.
        patch_size: kernel and stride of the conv.
        padding: symmetric zero padding of the conv (2 for the pose/normal checkpoints).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        patch_size: int = 16,
        padding: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.proj = nn.Conv2d(
            3, embed_dim, patch_size, stride=patch_size, padding=padding, device=device, dtype=dtype
        )

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid
