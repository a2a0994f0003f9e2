"""Building blocks of the Sapiens ViT, one module per file."""

from __future__ import annotations

from models.layers.attention import Attention
from models.layers.block import LN_EPS, Block
from models.layers.mlp import Mlp
from models.layers.patch_embed import PatchEmbed
from models.layers.pos_embed import resize_pos_embed

__all__ = ["LN_EPS", "Attention", "Block", "Mlp", "PatchEmbed", "resize_pos_embed"]
