"""Global multi-head self-attention with a fused qkv projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention"]


class Attention(nn.Module):
    """Tokens (B, N, C) -> (B, N, C); no mask, no relative bias, no rotary embedding.

    The fused ``qkv`` projection lays out its output as (3, heads, head_dim), q first. The
    product runs through ``F.scaled_dot_product_attention`` so that flash / memory-efficient
    kernels are used where the device and head_dim allow.

    Args:
        dim: token width C.
        num_heads: number of heads.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, bias=True, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))
