"""Resizing of absolute position embeddings to another token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_pos_embed"]


def resize_pos_embed(
    pos_embed: Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    *,
    extra_tokens: int = 0,
) -> Tensor:
    """Bicubically resize a (1, extra + h*w, C) position table from ``src_grid`` to ``dst_grid``.

    Leading ``extra_tokens`` (a cls slot) are kept as they are. Interpolation runs in float32
    with ``align_corners=False`` and the result is cast back, as the official runtime does.
    A same-size call returns the input unchanged.

    Args:
        pos_embed: (1, extra + h*w, C) table.
        src_grid: (h, w) the table is laid out for.
        dst_grid: (h', w') wanted.
        extra_tokens: number of leading non-grid tokens.

    Returns:
        (1, extra + h'*w', C) table.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    n_grid = pos_embed.shape[1] - extra_tokens
    if n_grid != src_grid[0] * src_grid[1]:
        msg = f"pos_embed has {n_grid} grid tokens, expected {src_grid[0]}x{src_grid[1]}"
        raise ValueError(msg)
    extra, grid = pos_embed[:, :extra_tokens], pos_embed[:, extra_tokens:]
    c = grid.shape[-1]
    grid = grid.reshape(1, src_grid[0], src_grid[1], c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=dst_grid, mode="bicubic", align_corners=False)
    grid = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return grid if extra_tokens == 0 else torch.cat((extra, grid), dim=1)
