"""Pre-norm Sapiens2 encoder layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers.grouped_attention import GroupedQueryAttention
from models.layers.rms_norm import RMSNorm
from models.layers.swiglu import SwiGLUFFN

__all__ = ["Sapiens2Block"]


class Sapiens2Block(nn.Module):
    """x = x + gamma * Attn(RMSNorm(x)); x = x + SwiGLU(RMSNorm(x)) on (B, N, C).

    LayerScale acts on the attention branch only; the FFN residual is unscaled. The 4K
    tokenizer's blocks have neither LayerScale nor QK-norm (and get no RoPE).

    Args:
        dim: token width C.
        num_heads: query heads.
        ffn_dim: SwiGLU hidden width (4C in Sapiens2).
        num_kv_heads: key/value heads (default ``num_heads``).
        qk_norm: RMSNorm q and k per head.
        layer_scale: initial LayerScale of the attention branch, or None for none.
        eps: epsilon of every RMSNorm.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        ffn_dim: int,
        num_kv_heads: int | None = None,
        qk_norm: bool = True,
        layer_scale: float | None = 1e-4,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.ln1 = RMSNorm(dim, eps=eps, **dd)
        self.attn = GroupedQueryAttention(
            dim,
            num_heads,
            num_kv_heads=num_kv_heads,
            qk_norm=qk_norm,
            layer_scale=layer_scale,
            eps=eps,
            **dd,
        )
        self.ln2 = RMSNorm(dim, eps=eps, **dd)
        self.ffn = SwiGLUFFN(dim, ffn_dim, **dd)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.ffn(self.ln2(x))
