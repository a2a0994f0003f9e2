"""Building blocks of the Sapiens and Sapiens2 ViTs, one module per file."""

from __future__ import annotations

from models.layers.attention import Attention
from models.layers.block import LN_EPS, Block
from models.layers.block2 import Sapiens2Block
from models.layers.grouped_attention import GroupedQueryAttention
from models.layers.layer_scale import LayerScale
from models.layers.mlp import Mlp
from models.layers.patch_embed import PatchEmbed
from models.layers.pos_embed import resize_pos_embed
from models.layers.rms_norm import RMSNorm
from models.layers.rope import RopePositionEmbedding2d, apply_rope, rope_periods
from models.layers.swiglu import SwiGLUFFN
from models.layers.window_tokenizer import WindowTokenizer

__all__ = [
    "LN_EPS",
    "Attention",
    "Block",
    "GroupedQueryAttention",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "RMSNorm",
    "RopePositionEmbedding2d",
    "Sapiens2Block",
    "SwiGLUFFN",
    "WindowTokenizer",
    "apply_rope",
    "resize_pos_embed",
    "rope_periods",
]
