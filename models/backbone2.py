"""The Sapiens2 vision transformer (RMSNorm, 2-D RoPE, GQA, SwiGLU) and its size factories."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import (
    LayerScale,
    PatchEmbed,
    RMSNorm,
    RopePositionEmbedding2d,
    Sapiens2Block,
    WindowTokenizer,
)
from models.spec2 import LAYER_SCALE_INIT, NUM_STORAGE_TOKENS, RMS_EPS, ROPE_BASE, Sapiens2Spec

__all__ = [
    "Sapiens2ViT",
    "build_backbone2",
    "sapiens2_0_1b",
    "sapiens2_0_4b",
    "sapiens2_0_8b",
    "sapiens2_1b",
    "sapiens2_1b_4k",
    "sapiens2_5b",
    "sapiens2_tiny",
    "sapiens2_tiny_4k",
]

_SELF_INITIALISED = (RMSNorm, LayerScale, RopePositionEmbedding2d, WindowTokenizer)


class Sapiens2ViT(nn.Module):
    """Image (B, 3, H, W) -> feature map (B, C, H/16, W/16) (the 4K sizes: (B, C, H/64, W/64)).

    Patch conv (padding 0; rows and columns past a multiple of 16 are dropped), the optional
    4K window tokenizer, then [cls, 8 storage tokens, patch tokens] through the blocks with
    2-D RoPE on the patch tokens only, a final RMSNorm ``ln1`` over all tokens, and the 9
    prefix tokens dropped. No absolute position embedding: any input size of at least 16 px
    per side works (the 4K sizes need a patch grid divisible by 4).

    Args:
        spec: the size.
        device: parameter device (``"meta"`` builds without allocating memory).
        dtype: parameter dtype; the RoPE ``periods`` buffer stays bfloat16.
    """

    def __init__(
        self,
        spec: Sapiens2Spec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        arch, c = spec.arch, spec.arch.embed_dim
        self.spec = spec
        self.num_prefix_tokens = 1 + NUM_STORAGE_TOKENS
        self.patch_embed = PatchEmbed(c, patch_size=arch.patch_size, padding=0, **dd)
        self.tokenizer: WindowTokenizer | None = None
        if arch.tokenizer_layers:
            self.tokenizer = WindowTokenizer(
                c,
                arch.num_heads,
                arch.tokenizer_layers,
                ffn_dim=arch.ffn_dim,
                window=arch.window,
                **dd,
            )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c, **dd))
        self.storage_tokens = nn.Parameter(torch.zeros(1, NUM_STORAGE_TOKENS, c, **dd))
        self.rope_embed = RopePositionEmbedding2d(arch.head_dim, base=ROPE_BASE, device=device)
        self.blocks = nn.ModuleList(
            Sapiens2Block(
                c,
                arch.num_heads,
                ffn_dim=arch.ffn_dim,
                num_kv_heads=arch.kv_heads_of(i),
                layer_scale=LAYER_SCALE_INIT,
                eps=RMS_EPS,
                **dd,
            )
            for i in range(arch.depth)
        )
        self.ln1 = RMSNorm(c, eps=RMS_EPS, **dd)
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation (truncated normal); real weights come from a checkpoint."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.storage_tokens, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, _SELF_INITIALISED):
                m.reset_parameters()

    @property
    def embed_dim(self) -> int:
        return self.spec.arch.embed_dim

    def forward(self, x: Tensor) -> Tensor:
        tokens, grid = self.patch_embed(x)
        if self.tokenizer is not None:
            tokens, grid = self.tokenizer(tokens, grid)
        b = tokens.shape[0]
        prefix = (self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1))
        tokens = torch.cat((*prefix, tokens), dim=1)
        rope = self.rope_embed(grid)
        for block in self.blocks:
            tokens = block(tokens, rope)
        tokens = self.ln1(tokens)[:, self.num_prefix_tokens :]
        return tokens.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2)


def build_backbone2(
    size: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Sapiens2ViT:
    """The Sapiens2 backbone of ``size`` (the same for every task)."""
    return Sapiens2ViT(Sapiens2Spec(size=size), device=device, dtype=dtype)


def sapiens2_tiny(**kwargs: object) -> Sapiens2ViT:
    """C=64, 4 layers, 4 heads (GQA with 2 KV heads in layers 1-2): for tests and demos."""
    return build_backbone2("tiny", **kwargs)  # type: ignore[arg-type]


def sapiens2_tiny_4k(**kwargs: object) -> Sapiens2ViT:
    """``tiny`` behind a one-layer 4x4-window tokenizer."""
    return build_backbone2("tiny-4k", **kwargs)  # type: ignore[arg-type]


def sapiens2_0_1b(**kwargs: object) -> Sapiens2ViT:
    """C=768, 12 layers, 12 heads, full attention everywhere."""
    return build_backbone2("0.1b", **kwargs)  # type: ignore[arg-type]


def sapiens2_0_4b(**kwargs: object) -> Sapiens2ViT:
    """C=1024, 24 layers, 16 heads (8 KV heads in layers 8-15)."""
    return build_backbone2("0.4b", **kwargs)  # type: ignore[arg-type]


def sapiens2_0_8b(**kwargs: object) -> Sapiens2ViT:
    """C=1280, 32 layers, 16 heads of width 80 (8 KV heads in layers 8-23)."""
    return build_backbone2("0.8b", **kwargs)  # type: ignore[arg-type]


def sapiens2_1b(**kwargs: object) -> Sapiens2ViT:
    """C=1536, 40 layers, 24 heads (12 KV heads in layers 8-31)."""
    return build_backbone2("1b", **kwargs)  # type: ignore[arg-type]


def sapiens2_1b_4k(**kwargs: object) -> Sapiens2ViT:
    """``1b`` behind a four-layer 4x4-window tokenizer, for 4096x3072 inputs."""
    return build_backbone2("1b-4k", **kwargs)  # type: ignore[arg-type]


def sapiens2_5b(**kwargs: object) -> Sapiens2ViT:
    """C=2432, 56 layers, 32 heads of width 76 (16 KV heads in layers 8-47)."""
    return build_backbone2("5b", **kwargs)  # type: ignore[arg-type]
