"""Per-channel scaling of a residual branch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LayerScale"]


class LayerScale(nn.Module):
    """x * weight, with a learned weight of shape (C,) broadcast over the last dim.

    Args:
        dim: channels C.
        init_value: initial value of every weight (1e-4 in Sapiens2).
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        *,
        init_value: float = 1e-4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.init_value = init_value
        self.weight = nn.Parameter(torch.full((dim,), init_value, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.init_value)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight
