"""The window tokenizer of Sapiens2-4K: each 4x4 window of patch tokens becomes one token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers.block2 import Sapiens2Block

__all__ = ["WindowTokenizer"]


class WindowTokenizer(nn.Module):
    """Patch tokens (B, h*w, C) on an (h, w) grid -> (B, h/s * w/s, C) on (h/s, w/s).

    The grid is cut into non-overlapping s x s windows (row-major over windows, row-major
    inside each). Each window sequence is [``w_cls`` | its s*s tokens] + ``local_pos_embed``;
    it runs through plain multi-head blocks (no QK-norm, no LayerScale, no RoPE) and the
    window's token is its cls output. Windows go through in chunks of ``chunk_size``, which
    bounds memory and does not change the result.

    Args:
        dim: token width C.
        num_heads: attention heads of the blocks.
        num_layers: blocks.
        ffn_dim: SwiGLU hidden width.
        window: window side s in patches.
        chunk_size: windows per pass.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_layers: int,
        *,
        ffn_dim: int,
        window: int = 4,
        chunk_size: int = 1024,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.window, self.chunk_size = window, chunk_size
        self.local_pos_embed = nn.Parameter(torch.zeros(1, window * window + 1, dim, **dd))
        self.w_cls = nn.Parameter(torch.zeros(1, 1, dim, **dd))
        self.blocks = nn.ModuleList(
            Sapiens2Block(dim, num_heads, ffn_dim=ffn_dim, qk_norm=False, layer_scale=None, **dd)
            for _ in range(num_layers)
        )

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.local_pos_embed, std=0.02)
        nn.init.trunc_normal_(self.w_cls, std=0.02)

    def forward(self, tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        """Returns the window tokens and their grid.

        Raises:
            ValueError: if a grid side does not divide by the window.
        """
        (h, w), s = grid, self.window
        if h % s or w % s:
            msg = f"the 4K tokenizer needs a patch grid divisible by {s}, got {h}x{w}"
            raise ValueError(msg + f" (input {h * 16}x{w * 16} px at patch 16)")
        b, _, c = tokens.shape
        windows = tokens.reshape(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, s * s, c)
        out = [self._encode(chunk) for chunk in windows.split(self.chunk_size)]
        return torch.cat(out).reshape(b, (h // s) * (w // s), c), (h // s, w // s)

    def _encode(self, windows: Tensor) -> Tensor:
        cls = self.w_cls.expand(windows.shape[0], -1, -1)
        x = torch.cat((cls, windows), dim=1) + self.local_pos_embed
        for block in self.blocks:
            x = block(x)
        return x[:, 0]
