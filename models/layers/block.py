"""Pre-norm ViT encoder layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers.attention import Attention
from models.layers.mlp import Mlp

__all__ = ["LN_EPS", "Block"]

#: LayerNorm epsilon of every Sapiens norm (not PyTorch's default 1e-5).
LN_EPS = 1e-6


class Block(nn.Module):
    """x = x + Attn(LN(x)); x = x + MLP(LN(x)) on (B, N, C). No layer scale, no drop path.

    Args:
        dim: token width C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS, **dd)
        self.attn = Attention(dim, num_heads, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS, **dd)
        self.mlp = Mlp(dim, dim * mlp_ratio, **dd)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
