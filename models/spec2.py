"""Typed descriptions of the Sapiens2 backbones and task heads.

Numbers follow ``SPEC-sapiens2.md``: the architecture table of §1.1 and the head layouts of
§3.1-3.4. Two test sizes use the same code with small dimensions: ``tiny`` (C=64, 4 layers, 4
heads of width 16, GQA in layers 1 and 2) and ``tiny-4k``, which adds a one-layer 4x4-window
tokenizer in front, as ``1b-4k`` does for ``1b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from models.spec import HeadSpec

__all__ = [
    "LAYER_SCALE_INIT",
    "NUM_STORAGE_TOKENS",
    "RMS_EPS",
    "ROPE_BASE",
    "SAPIENS2_4K_INPUT_SIZE",
    "SAPIENS2_ARCHES",
    "SAPIENS2_INPUT_SIZE",
    "SAPIENS2_NUM_CLASSES",
    "SAPIENS2_SIZES",
    "SAPIENS2_TASKS",
    "Sapiens2Arch",
    "Sapiens2Size",
    "Sapiens2Spec",
    "Sapiens2Task",
    "ShuffleHeadSpec",
    "head_spec2",
    "pointmap_scale_cells",
]

Sapiens2Size = Literal["tiny", "tiny-4k", "0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"]
Sapiens2Task = Literal["pose", "seg", "normal", "pointmap", "pretrain"]
SAPIENS2_SIZES: tuple[str, ...] = get_args(Sapiens2Size)
SAPIENS2_TASKS: tuple[str, ...] = get_args(Sapiens2Task)

#: (H, W) of the released task and pretrain models; of the 4K pretrain model.
SAPIENS2_INPUT_SIZE: tuple[int, int] = (1024, 768)
SAPIENS2_4K_INPUT_SIZE: tuple[int, int] = (4096, 3072)

#: RoPE period base, storage ("register") tokens, RMSNorm epsilon, LayerScale init (SPEC §2).
ROPE_BASE = 100.0
NUM_STORAGE_TOKENS = 8
RMS_EPS = 1e-6
LAYER_SCALE_INIT = 1e-4


@dataclass(frozen=True, slots=True, kw_only=True)
class Sapiens2Arch:
    """Shape of one Sapiens2 size.

    Args:
        embed_dim: token width C.
        depth: number of encoder layers L.
        num_heads: query heads; head_dim = C / num_heads.
        gqa_layers: 0-based layers that use grouped-query attention.
        kv_heads: key/value heads in those layers (the others have ``num_heads``).
        tokenizer_layers: blocks of the 4K window tokenizer; 0 builds none.
        window: tokenizer window side, in patches.
        ffn_ratio: SwiGLU hidden width / C (not scaled by 2/3).
        patch_size: square patch side in pixels.
    """

    embed_dim: int
    depth: int
    num_heads: int
    gqa_layers: frozenset[int] = field(default_factory=frozenset)
    kv_heads: int = 0
    tokenizer_layers: int = 0
    window: int = 4
    ffn_ratio: int = 4
    patch_size: int = 16

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            msg = (
                f"embed_dim / num_heads must be a whole multiple of 4 (2-D RoPE), got "
                f"{self.embed_dim} / {self.num_heads}"
            )
            raise ValueError(msg)
        if self.gqa_layers and (self.kv_heads < 1 or self.num_heads % self.kv_heads):
            msg = f"kv_heads must divide num_heads={self.num_heads}, got {self.kv_heads}"
            raise ValueError(msg)
        if bad := sorted(i for i in self.gqa_layers if not 0 <= i < self.depth):
            raise ValueError(f"gqa_layers must lie in [0, {self.depth}), got {bad}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        return self.ffn_ratio * self.embed_dim

    def kv_heads_of(self, layer: int) -> int:
        """Key/value heads of encoder layer ``layer``."""
        return self.kv_heads if layer in self.gqa_layers else self.num_heads


def _released(c: int, depth: int, heads: int, *, tokenizer_layers: int = 0) -> Sapiens2Arch:
    """Full attention in the first and last 8 layers, GQA with heads/2 KV heads between."""
    return Sapiens2Arch(
        embed_dim=c,
        depth=depth,
        num_heads=heads,
        gqa_layers=frozenset(range(8, depth - 8)),
        kv_heads=heads // 2,
        tokenizer_layers=tokenizer_layers,
    )


_TINY = Sapiens2Arch(embed_dim=64, depth=4, num_heads=4, gqa_layers=frozenset({1, 2}), kv_heads=2)

SAPIENS2_ARCHES: dict[str, Sapiens2Arch] = {
    "tiny": _TINY,
    "tiny-4k": replace(_TINY, tokenizer_layers=1),
    "0.1b": _released(768, 12, 12),
    "0.4b": _released(1024, 24, 16),
    "0.8b": _released(1280, 32, 16),
    "1b": _released(1536, 40, 24),
    "1b-4k": _released(1536, 40, 24, tokenizer_layers=4),
    "5b": _released(2432, 56, 32),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sapiens2Spec:
    """A Sapiens2 backbone instance. Unlike v1, the backbone is the same for every task.

    Args:
        size: one of ``SAPIENS2_SIZES``.
    """

    size: str

    def __post_init__(self) -> None:
        if self.size not in SAPIENS2_ARCHES:
            msg = f"unknown Sapiens2 size {self.size!r}; expected one of {list(SAPIENS2_ARCHES)}"
            raise ValueError(msg)

    @property
    def family(self) -> str:
        return "sapiens2"

    @property
    def arch(self) -> Sapiens2Arch:
        return SAPIENS2_ARCHES[self.size]

    @property
    def img_size(self) -> tuple[int, int]:
        """(H, W) the released model of this size was trained at (bookkeeping only)."""
        return SAPIENS2_4K_INPUT_SIZE if self.arch.tokenizer_layers else SAPIENS2_INPUT_SIZE


@dataclass(frozen=True, slots=True, kw_only=True)
class ShuffleHeadSpec:
    """A PixelShuffle decoder (normal, pointmap; SPEC §3.3-3.4).

    Layout: 3x3 ``input_conv`` C->C; per ``upsample_dims`` entry a 3x3 conv to 4x that width and
    PixelShuffle(2); 3x3 convs; a 1x1 output conv. Every stage ends in InstanceNorm and SiLU.
    The pointmap head adds a scale branch on the feature map: stride-2 1x1 convs
    (``scale_dims``), flatten, and an MLP (``scale_hidden``) to one value.

    Args:
        task: ``normal`` or ``pointmap``.
        in_dim: backbone width C.
        upsample_dims: output channels of each upsample block (each doubles H and W).
        conv_dims: output channels of each 3x3 conv.
        out_dim: channels of the output conv.
        scale_dims: output channels of the stride-2 1x1 convs (pointmap only).
        scale_hidden: hidden widths of the scale MLP (pointmap only).
        scale_cells: cells of the feature grid after the stride-2 convs; sizes the MLP input.
    """

    task: str
    in_dim: int
    upsample_dims: tuple[int, ...]
    conv_dims: tuple[int, ...]
    out_dim: int = 3
    scale_dims: tuple[int, ...] = ()
    scale_hidden: tuple[int, ...] = ()
    scale_cells: int = 48

    @property
    def upsample(self) -> int:
        return 2 ** len(self.upsample_dims)

    @property
    def scale_in_features(self) -> int:
        """Input width of the scale MLP: last scale-conv width x ``scale_cells``."""
        return self.scale_dims[-1] * self.scale_cells if self.scale_dims else 0


def pointmap_scale_cells(input_size: tuple[int, int], *, patch_size: int = 16) -> int:
    """Cells the pointmap scale branch sees for an (H, W) input: the patch grid, halved (rounding
    up, as a stride-2 1x1 conv does) three times. 1024x768 -> 64x48 -> 8x6 = 48."""
    h, w = input_size[0] // patch_size, input_size[1] // patch_size
    for _ in range(3):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h * w


_Layout = tuple[tuple[int, ...], tuple[int, ...]]
_POSE_STD: _Layout = ((1024, 768), (512, 512, 256))
_SEG_STD: _Layout = ((512, 256, 128, 64), (64, 64))
_NORMAL_STD: _Layout = ((768, 512, 256, 128), (64, 32, 16))
_POINTMAP_STD: _Layout = ((1536, 768, 512, 256), (64, 32, 16))
_TINY_SHUFFLE: _Layout = ((32, 16, 16, 8), (8, 8, 4))
#: Per task and size: (deconv or upsample-block widths, conv widths) (SPEC §3.1-3.4).
_LAYOUTS: dict[str, dict[str, _Layout]] = {
    "pose": {
        "tiny": ((32, 24), (16, 16, 8)),
        "0.4b": _POSE_STD,
        "0.8b": _POSE_STD,
        "1b": ((1536, 1024), (768, 512, 256)),
        "5b": _POSE_STD,
    },
    "seg": {
        "tiny": ((32, 16, 16, 8), (8, 8)),
        "0.4b": _SEG_STD,
        "0.8b": _SEG_STD,
        "1b": _SEG_STD,
        "5b": _SEG_STD,
    },
    "normal": {
        "tiny": _TINY_SHUFFLE,
        "0.4b": _NORMAL_STD,
        "0.8b": _NORMAL_STD,
        "1b": _NORMAL_STD,
        "5b": ((1536, 768, 512, 256), (128, 64, 32)),
    },
    "pointmap": {
        "tiny": _TINY_SHUFFLE,
        "0.4b": _POINTMAP_STD,
        "0.8b": _POINTMAP_STD,
        "1b": _POINTMAP_STD,
        "5b": ((1536, 768, 768, 768), (128, 64, 32)),
    },
}
#: Pointmap scale branch: (stride-2 conv widths, MLP hidden widths); one layout for every
#: released size.
_SCALE: dict[str, _Layout] = {
    "tiny": ((32, 16, 8), (16, 8)),
    "released": ((1536, 512, 128), (512, 128)),
}
#: Body-part classes of the Sapiens2 seg head (SPEC §6.1).
SAPIENS2_NUM_CLASSES = 29


def _head_size(task: str, size: str) -> str:
    if task not in _LAYOUTS:
        heads = sorted(_LAYOUTS)
        raise ValueError(f"task {task!r} has no Sapiens2 head; expected one of {heads}")
    # tiny-4k shares tiny's heads; no 4K or 0.1b task heads are released (SPEC §2.6, §5.1).
    key = "tiny" if size == "tiny-4k" else size
    if key not in _LAYOUTS[task]:
        msg = f"no Sapiens2 {task} head is defined for size {size!r}; sizes: {list(_LAYOUTS[task])}"
        raise ValueError(msg)
    return key


def head_spec2(
    task: str,
    size: str,
    *,
    num_keypoints: int = 308,
    input_size: tuple[int, int] = SAPIENS2_INPUT_SIZE,
    scale_cells: int | None = None,
) -> HeadSpec | ShuffleHeadSpec:
    """The head of the Sapiens2 ``task`` model at ``size``.

    Args:
        task: ``pose``, ``seg``, ``normal`` or ``pointmap``.
        size: a size with released heads (``0.4b``, ``0.8b``, ``1b``, ``5b``) or ``tiny``/
            ``tiny-4k``.
        num_keypoints: pose output channels (308 for every released model).
        input_size: (H, W) the pointmap scale MLP is sized for (the released 1024x768).
        scale_cells: overrides ``input_size`` with the cell count itself (from a checkpoint).

    Raises:
        ValueError: unknown task, a size without heads, or a non-positive count.
    """
    key = _head_size(task, size)
    in_dim = SAPIENS2_ARCHES[size].embed_dim
    first, second = _LAYOUTS[task][key]
    if task in ("pose", "seg"):
        out = num_keypoints if task == "pose" else SAPIENS2_NUM_CLASSES
        if out < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        return HeadSpec(task=task, in_dim=in_dim, deconv_dims=first, conv_dims=second, out_dim=out)
    if task == "normal":
        return ShuffleHeadSpec(task=task, in_dim=in_dim, upsample_dims=first, conv_dims=second)
    cells = pointmap_scale_cells(input_size) if scale_cells is None else scale_cells
    if cells < 1:
        raise ValueError(f"the pointmap scale branch needs >= 1 cell, got {cells}")
    scale_dims, hidden = _SCALE["tiny" if key == "tiny" else "released"]
    return ShuffleHeadSpec(
        task=task,
        in_dim=in_dim,
        upsample_dims=first,
        conv_dims=second,
        scale_dims=scale_dims,
        scale_hidden=hidden,
        scale_cells=cells,
    )
