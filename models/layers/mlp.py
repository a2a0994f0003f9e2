"""Transformer feed-forward block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """Linear -> exact (erf) GELU -> Linear on (B, N, C).

    Args:
        dim: token width C.
        hidden_dim: inner width.
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
        self.fc1 = nn.Linear(dim, hidden_dim, device=device, dtype=dtype)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))
