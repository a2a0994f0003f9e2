"""Typed descriptions of the Sapiens backbones and task heads.

Numbers follow the official Sapiens configurations (facebookresearch/sapiens): the ViT shapes of
``mmpretrain``'s ``arch_zoo`` and the head layouts of the pose/seg/depth/normal configs. A ``tiny``
size uses the same code with small dimensions for tests and demos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "ARCHES",
    "FAMILIES",
    "INPUT_SIZE",
    "PRETRAIN_INPUT_SIZE",
    "SIZES",
    "TASKS",
    "BackboneArch",
    "BackboneSpec",
    "Family",
    "HeadSpec",
    "Size",
    "Task",
    "backbone_spec",
    "head_spec",
    "output_keypoints",
]

Family = Literal["sapiens", "sapiens2"]
#: Model families: the original Sapiens (ViT, absolute positions) and Sapiens2 (``models.spec2``).
FAMILIES: tuple[str, ...] = get_args(Family)

Size = Literal["tiny", "0.3b", "0.6b", "1b", "2b"]
Task = Literal["pose", "seg", "depth", "normal", "pretrain"]
SIZES: tuple[str, ...] = get_args(Size)
TASKS: tuple[str, ...] = get_args(Task)

#: (H, W) the fine-tuned checkpoints were trained at; (H, W) of the MAE pretraining.
INPUT_SIZE: tuple[int, int] = (1024, 768)
PRETRAIN_INPUT_SIZE: tuple[int, int] = (1024, 1024)

#: Patch-embedding conv padding per task family (SPEC §1.2; pose and normal use 2).
_PATCH_PADDING: dict[str, int] = {"pose": 2, "normal": 2, "seg": 0, "depth": 0, "pretrain": 0}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackboneArch:
    """Shape of one ViT size.

    Args:
        embed_dim: token width C.
        depth: number of encoder layers L.
        num_heads: attention heads; head_dim = C / num_heads.
        mlp_ratio: MLP hidden width / C.
        patch_size: square patch side in pixels.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: int = 4
    patch_size: int = 16

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            msg = f"embed_dim must divide by num_heads, got {self.embed_dim} / {self.num_heads}"
            raise ValueError(msg)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def block_params(self) -> int:
        """Parameters of the encoder layers (qkv, projection, MLP, two norms), which are
        nearly all of a backbone's: 0.3b has 302M of them."""
        c, hidden = self.embed_dim, self.mlp_ratio * self.embed_dim
        per_layer = 3 * c * c + 3 * c + c * c + c + 2 * c * hidden + hidden + c + 4 * c
        return self.depth * per_layer


ARCHES: dict[str, BackboneArch] = {
    "tiny": BackboneArch(embed_dim=64, depth=2, num_heads=2),
    "0.3b": BackboneArch(embed_dim=1024, depth=24, num_heads=16),
    "0.6b": BackboneArch(embed_dim=1280, depth=32, num_heads=16),
    "1b": BackboneArch(embed_dim=1536, depth=40, num_heads=24),
    "2b": BackboneArch(embed_dim=1920, depth=48, num_heads=32),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class BackboneSpec:
    """A backbone instance: its size plus the task-family specifics.

    Args:
        size: one of ``SIZES``.
        img_size: (H, W) the position embedding was trained for.
        patch_padding: zero padding of the patch conv (2 for pose/normal, else 0).
        with_cls_token: True only for the MAE pretrain model.
    """

    size: str
    img_size: tuple[int, int] = INPUT_SIZE
    patch_padding: int = 0
    with_cls_token: bool = False

    def __post_init__(self) -> None:
        if self.size not in ARCHES:
            msg = f"unknown backbone size {self.size!r}; expected one of {sorted(ARCHES)}"
            raise ValueError(msg)
        p = self.arch.patch_size
        if self.img_size[0] % p or self.img_size[1] % p:
            msg = f"img_size must be a multiple of {p}, got {self.img_size}"
            raise ValueError(msg)

    @property
    def family(self) -> str:
        """Always ``sapiens``: the Sapiens2 backbones are described by ``Sapiens2Spec``."""
        return "sapiens"

    @property
    def arch(self) -> BackboneArch:
        return ARCHES[self.size]

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (h, w) at ``img_size``."""
        p = self.arch.patch_size
        return self.img_size[0] // p, self.img_size[1] // p


def backbone_spec(task: str, size: str) -> BackboneSpec:
    """The backbone that the official checkpoints of ``task`` at ``size`` use."""
    if task not in _PATCH_PADDING:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    pretrain = task == "pretrain"
    return BackboneSpec(
        size=size,
        img_size=PRETRAIN_INPUT_SIZE if pretrain else INPUT_SIZE,
        patch_padding=_PATCH_PADDING[task],
        with_cls_token=pretrain,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HeadSpec:
    """A deconv/conv decoder head (SPEC §2): every stage is conv -> InstanceNorm -> SiLU.

    Args:
        task: the task the head predicts.
        in_dim: backbone width C.
        deconv_dims: output channels of each 4x4 stride-2 transposed conv (each doubles H, W).
        conv_dims: output channels of each 1x1 conv after the deconvs.
        out_dim: channels of the final 1x1 conv (keypoints, classes, 1 or 3).
    """

    task: str
    in_dim: int
    deconv_dims: tuple[int, ...]
    conv_dims: tuple[int, ...]
    out_dim: int

    @property
    def upsample(self) -> int:
        return 2 ** len(self.deconv_dims)


_HEAD_LAYOUT: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "pose": ((768, 768), (768, 768)),
    "seg": ((768, 768, 768), (768, 768, 768)),
    "depth": ((384, 384, 384, 384), (384, 384)),
    "normal": ((768, 768, 768), (768, 768, 768)),
}
_HEAD_OUT: dict[str, int] = {"seg": 28, "depth": 1, "normal": 3}
#: Keypoint sets the released pose checkpoints predict.
POSE_KEYPOINTS: tuple[int, ...] = (308, 133, 17)


def head_spec(task: str, size: str, *, num_keypoints: int = 308, num_classes: int = 28) -> HeadSpec:
    """The head of the official ``task`` checkpoints at ``size``.

    The ``tiny`` size keeps the layer structure but divides every head width by 24.
    """
    if task not in _HEAD_LAYOUT:
        raise ValueError(f"task {task!r} has no head; expected one of {sorted(_HEAD_LAYOUT)}")
    if task == "pose" and num_keypoints not in POSE_KEYPOINTS:
        msg = f"num_keypoints must be one of {POSE_KEYPOINTS}, got {num_keypoints}"
        raise ValueError(msg)
    deconvs, convs = _HEAD_LAYOUT[task]
    if size == "tiny":
        deconvs, convs = tuple(d // 24 for d in deconvs), tuple(c // 24 for c in convs)
    out = {"pose": num_keypoints, "seg": num_classes}.get(task, _HEAD_OUT.get(task, 0))
    return HeadSpec(
        task=task,
        in_dim=ARCHES[size].embed_dim,
        deconv_dims=deconvs,
        conv_dims=convs,
        out_dim=out,
    )


def output_keypoints(size: str, configured: int) -> int:
    """Keypoints a pose model of ``size`` outputs: the ``configured`` count (308, 133 or 17)
    at every size. The tiny model is built with it; a released model loads the checkpoint of
    that keypoint set, and one whose head predicts another count is refused
    (``actors.groups.build_groups``), so a store never holds another set than asked for."""
    if configured not in POSE_KEYPOINTS:
        msg = f"num_keypoints of a {size} pose model: expected one of {POSE_KEYPOINTS}, got "
        raise ValueError(msg + repr(configured))
    return configured
