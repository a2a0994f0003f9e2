"""A backbone's forward cut at block ``k``: the same operations, in the same order, as
``SapiensViT.forward`` and ``Sapiens2ViT.forward``, so prefix then suffix equals the whole
forward bit for bit."""

from __future__ import annotations

import re

import torch
from torch import Tensor

from models.backbone import SapiensViT
from models.backbone2 import Sapiens2ViT
from models.layers import resize_pos_embed

__all__ = ["prefix", "shared_key", "suffix"]

_BLOCK = re.compile(r"^blocks\.(\d+)\.")
#: Stem parameters: Sapiens (patch conv, position table, cls token) and Sapiens2 (patch conv,
#: 4K tokenizer, cls and storage tokens; its RoPE has no parameters).
_STEM = ("patch_embed.", "pos_embed", "cls_token", "tokenizer.", "storage_tokens")
#: What runs between the blocks: the Sapiens2 RoPE tables of the grid (None for Sapiens).
Context = Tensor | tuple[Tensor, ...] | None


def shared_key(name: str, k: int) -> bool:
    """Whether backbone parameter ``name`` is in the shared prefix at branch point ``k``: the
    stem (patch embedding, position table, cls token) for k >= 1, and blocks ``[0, k)``."""
    if m := _BLOCK.match(name):
        return int(m[1]) < k
    return k >= 1 and name.startswith(_STEM)


def prefix(
    backbone: SapiensViT | Sapiens2ViT, x: Tensor, k: int
) -> tuple[Tensor, tuple[int, int], Context]:
    """Images (B, 3, H, W) -> tokens after blocks ``[0, k)`` (B, N, C), the patch grid and
    what the later blocks need (the Sapiens2 RoPE)."""
    if isinstance(backbone, Sapiens2ViT):
        return _prefix2(backbone, x, k)
    tokens, grid = backbone.patch_embed(x)
    if backbone.cls_token is not None:
        tokens = torch.cat((backbone.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
    pos = resize_pos_embed(
        backbone.pos_embed, backbone.spec.grid, grid, extra_tokens=backbone.num_extra_tokens
    )
    tokens = tokens + pos
    for block in backbone.blocks[:k]:
        tokens = block(tokens)
    return tokens, grid, None


def _prefix2(backbone: Sapiens2ViT, x: Tensor, k: int) -> tuple[Tensor, tuple[int, int], Context]:
    tokens, grid = backbone.patch_embed(x)
    if backbone.tokenizer is not None:
        tokens, grid = backbone.tokenizer(tokens, grid)
    b = tokens.shape[0]
    head = (backbone.cls_token.expand(b, -1, -1), backbone.storage_tokens.expand(b, -1, -1))
    tokens = torch.cat((*head, tokens), dim=1)
    rope = backbone.rope_embed(grid)
    for block in backbone.blocks[:k]:
        tokens = block(tokens, rope)
    return tokens, grid, rope


def suffix(
    backbone: SapiensViT | Sapiens2ViT,
    tokens: Tensor,
    grid: tuple[int, int],
    k: int,
    context: Context = None,
) -> Tensor:
    """Tokens after block ``k - 1`` -> the feature map (B, C, h, w)."""
    b = tokens.shape[0]
    if isinstance(backbone, Sapiens2ViT):
        for block in backbone.blocks[k:]:
            tokens = block(tokens, context)
        tokens = backbone.ln1(tokens)[:, backbone.num_prefix_tokens :]
        return tokens.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    for block in backbone.blocks[k:]:
        tokens = block(tokens)
    tokens = backbone.norm(tokens)[:, backbone.num_extra_tokens :]
    return tokens.transpose(1, 2).reshape(b, -1, grid[0], grid[1])
