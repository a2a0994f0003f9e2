"""2-D rotary position embedding (RoPE) of Sapiens2, computed in bfloat16 op by op.

Every released Sapiens2 model runs its RoPE arithmetic in bfloat16, even inside a float32
model: the periods, the grid coordinates, the angles, their sine and cosine, and the rotation
itself each round to bfloat16, and q/k are cast to bfloat16 before the rotation (SPEC §2.4).
A float32 RoPE moves pose heatmaps by up to ~1e-2, so this module reproduces that path exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ROPE_DTYPE",
    "RopePositionEmbedding2d",
    "apply_rope",
    "rope_angles",
    "rope_periods",
    "rotate_half",
]

#: The dtype of every RoPE operation.
ROPE_DTYPE = torch.bfloat16


def rope_periods(
    head_dim: int, *, base: float = 100.0, device: torch.device | str | None = None
) -> Tensor:
    """``base ** (2i / (head_dim / 2))`` for i < head_dim / 4, each op rounded to bfloat16.

    The exponent is itself rounded, so for head_dim 76 and 80 some periods differ from the
    float32 formula rounded once (SPEC §2.4).

    Raises:
        ValueError: if ``head_dim`` is not a multiple of 4.
    """
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}")
    half = head_dim // 2
    exponents = torch.arange(0, half, 2, dtype=ROPE_DTYPE, device=device) / half
    return base**exponents


def rope_angles(grid: tuple[int, int], periods: Tensor) -> Tensor:
    """Rotation angles (h*w, head_dim) of a row-major (h, w) token grid, in ``periods.dtype``.

    Coordinates are ``2 * (i + 0.5) / n - 1`` per axis (each axis normalised by its own
    length); the angle is ``(2 pi * coord) / period``. Per token the vector is
    [row angles | column angles], tiled twice.
    """
    h, w = grid
    dtype, device = periods.dtype, periods.device
    ys = torch.arange(0.5, h, dtype=dtype, device=device) / h * 2 - 1
    xs = torch.arange(0.5, w, dtype=dtype, device=device) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2)
    angles = 2 * math.pi * coords[:, :, None] / periods  # (h*w, 2, head_dim / 4)
    return angles.flatten(1).tile(2)


def rotate_half(x: Tensor) -> Tensor:
    """[x1 | x2] -> [-x2 | x1] over the last dim (dim j pairs with j + d/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate the last ``len(sin)`` tokens of (..., N, d) ``x``; earlier (prefix) tokens are
    left unrotated. All of ``x`` is cast to the tables' dtype first and back at the end, so the
    prefix tokens are rounded too, as in the official model.

    Args:
        x: queries or keys (..., N, d).
        sin: (n, d) sine table, n <= N.
        cos: (n, d) cosine table.
    """
    dtype = x.dtype
    x = x.to(sin.dtype)
    n = sin.shape[0]
    prefix, grid = x[..., : x.shape[-2] - n, :], x[..., x.shape[-2] - n :, :]
    grid = grid * cos + rotate_half(grid) * sin
    return torch.cat((prefix, grid), dim=-2).to(dtype)


class RopePositionEmbedding2d(nn.Module):
    """Token grid (h, w) -> (sin, cos) tables of shape (h*w, head_dim), in bfloat16.

    ``periods`` is a persistent bfloat16 buffer (checkpoints carry it). Tables are cached per
    (grid, device); loading weights or moving the module clears the cache.

    Args:
        head_dim: attention head width (a multiple of 4).
        base: period base (100 in Sapiens2).
        max_cached: how many grids to keep tables for.
        device: buffer device.
    """

    periods: Tensor

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 100.0,
        max_cached: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.head_dim, self.base, self.max_cached = head_dim, base, max_cached
        # Computed on the CPU and moved: cheap on every device, "meta" included.
        self.register_buffer("periods", rope_periods(head_dim, base=base).to(device))
        self._cache: OrderedDict[tuple[object, ...], tuple[Tensor, Tensor]] = OrderedDict()

    def reset_parameters(self) -> None:
        """Recompute the periods (the bfloat16 way) and drop cached tables."""
        with torch.no_grad():
            self.periods.copy_(rope_periods(self.head_dim, base=self.base))
        self._cache.clear()

    def forward(self, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        if torch.compiler.is_compiling():
            return self._tables(grid)
        key = (tuple(grid), self.periods.device, torch.is_inference_mode_enabled())
        if key not in self._cache:
            self._cache[key] = self._tables(grid)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _tables(self, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        angles = rope_angles(grid, self.periods.to(ROPE_DTYPE))
        return angles.sin(), angles.cos()

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]

    def _apply(
        self, fn: Callable[[Tensor], Tensor], recurse: bool = True
    ) -> RopePositionEmbedding2d:
        self._cache.clear()
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base:g}"
