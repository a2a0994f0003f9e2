"""Self-attention of Sapiens2: separate q/k/v projections, QK-norm, grouped KV heads, RoPE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers.layer_scale import LayerScale
from models.layers.rms_norm import RMSNorm
from models.layers.rope import apply_rope

__all__ = ["GroupedQueryAttention"]

#: Devices whose ``scaled_dot_product_attention(enable_gqa=True)`` was checked to equal
#: ``repeat_interleave`` of the KV heads bit for bit (CPU, torch 2.13). Elsewhere the KV heads
#: are expanded explicitly, which leaves every fused kernel available.
_NATIVE_GQA_DEVICES = frozenset({"cpu"})


class GroupedQueryAttention(nn.Module):
    """Tokens (B, N, C) -> (B, N, C), pre-scaled by LayerScale when it has one.

    Steps: q = wq(x), k = wk(x), v = wv(x) (each with bias; k and v have ``num_kv_heads``
    heads); RMSNorm of q and k over the head dim; RoPE on q and k (all but the prefix
    tokens); softmax attention with scale head_dim^-1/2, KV head j serving query heads
    j*g ... j*g+g-1 (g = num_heads / num_kv_heads); ``proj``; ``gamma``.

    Rotating the KV heads before expanding them gives the same values as after (the rotation
    depends only on the position), and saves the work on the copies.

    Args:
        dim: token width C.
        num_heads: query heads.
        num_kv_heads: key/value heads (default ``num_heads``: plain multi-head attention).
        qk_norm: normalise q and k per head (weights ``q_norm``/``k_norm`` of size head_dim).
        layer_scale: initial LayerScale value, or None for no ``gamma``.
        eps: epsilon of the QK norms.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        qk_norm: bool = True,
        layer_scale: float | None = 1e-4,
        eps: float = 1e-6,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        kv_heads = num_kv_heads or num_heads
        if dim % num_heads or num_heads % kv_heads:
            msg = f"expected dim % num_heads == num_heads % num_kv_heads == 0, got {dim}, "
            raise ValueError(msg + f"{num_heads}, {kv_heads}")
        self.num_heads, self.num_kv_heads = num_heads, kv_heads
        self.head_dim = dim // num_heads
        self.wq = nn.Linear(dim, dim, **dd)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim, **dd)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim, **dd)
        self.q_norm = RMSNorm(self.head_dim, eps=eps, **dd) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps=eps, **dd) if qk_norm else None
        self.proj = nn.Linear(dim, dim, **dd)
        self.gamma = None if layer_scale is None else LayerScale(dim, init_value=layer_scale, **dd)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Args:
        x: tokens (B, N, C).
        rope: (sin, cos) tables for the last rows of the sequence; None for no RoPE.
        """
        b, n, _ = x.shape
        q = self._split_heads(self.wq(x), self.num_heads)
        k = self._split_heads(self.wk(x), self.num_kv_heads)
        v = self._split_heads(self.wv(x), self.num_kv_heads)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = self._attend(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, -1))
        return out if self.gamma is None else self.gamma(out)

    def _split_heads(self, t: Tensor, heads: int) -> Tensor:
        """(B, N, heads * hd) -> (B, heads, N, hd)."""
        b, n, _ = t.shape
        return t.reshape(b, n, heads, self.head_dim).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        groups = self.num_heads // self.num_kv_heads
        if groups == 1:
            return F.scaled_dot_product_attention(q, k, v)
        if q.device.type in _NATIVE_GQA_DEVICES:
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v)
