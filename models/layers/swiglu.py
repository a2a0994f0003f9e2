"""SwiGLU feed-forward block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SwiGLUFFN"]


class SwiGLUFFN(nn.Module):
    """(B, N, C) -> (B, N, C): [u | g] = w12(x); w3(SiLU(u) * g).

    The first half of ``w12``'s output feeds the SiLU, the second half is the linear gate.
    The hidden width is used as given (Sapiens2: 4C, not LLaMA's 2/3 of it).

    Args:
        dim: token width C.
        hidden_dim: width of u, g and the input of ``w3``.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, device=device, dtype=dtype)
        self.w3 = nn.Linear(hidden_dim, dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        u, gate = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(u) * gate)
