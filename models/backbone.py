"""The Sapiens vision transformer (a plain, MAE-pretrained ViT) and its size factories."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import LN_EPS, Block, PatchEmbed, resize_pos_embed
from models.spec import BackboneSpec, backbone_spec

__all__ = [
    "SapiensViT",
    "build_backbone",
    "sapiens_0_3b",
    "sapiens_0_6b",
    "sapiens_1b",
    "sapiens_2b",
    "sapiens_tiny",
]


class SapiensViT(nn.Module):
    """Image (B, 3, H, W) -> feature map (B, C, H/16, W/16).

    Fine-tuned form: no cls token, a 64x48 position grid at 1024x768. Pretrain form: a cls
    token that takes part in attention and is dropped at the output, a 64x64 grid at 1024x1024.
    Other input sizes work: the position table is bicubically resized to the actual grid.

    Args:
        spec: the backbone size and task-family details.
        device: parameter device (``"meta"`` builds without allocating memory).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        arch = spec.arch
        self.spec = spec
        self.patch_embed = PatchEmbed(
            arch.embed_dim, patch_size=arch.patch_size, padding=spec.patch_padding, **dd
        )
        self.num_extra_tokens = 1 if spec.with_cls_token else 0
        gh, gw = spec.grid
        if spec.with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim, **dd))
        else:
            self.register_parameter("cls_token", None)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_extra_tokens + gh * gw, arch.embed_dim, **dd)
        )
        self.blocks = nn.ModuleList(
            Block(arch.embed_dim, arch.num_heads, mlp_ratio=arch.mlp_ratio, **dd)
            for _ in range(arch.depth)
        )
        self.norm = nn.LayerNorm(arch.embed_dim, eps=LN_EPS, **dd)
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random initialisation (truncated normal); real weights come from a checkpoint."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def embed_dim(self) -> int:
        return self.spec.arch.embed_dim

    def forward(self, x: Tensor) -> Tensor:
        tokens, grid = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        pos = resize_pos_embed(
            self.pos_embed, self.spec.grid, grid, extra_tokens=self.num_extra_tokens
        )
        tokens = tokens + pos
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)[:, self.num_extra_tokens :]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])


def build_backbone(
    task: str,
    size: str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SapiensViT:
    """The backbone of the official ``task`` checkpoints (padding, cls token, grid) at ``size``."""
    return SapiensViT(backbone_spec(task, size), device=device, dtype=dtype)


def sapiens_tiny(task: str = "pose", **kwargs: object) -> SapiensViT:
    """Two layers of width 64: same code, for tests and demos."""
    return build_backbone(task, "tiny", **kwargs)  # type: ignore[arg-type]


def sapiens_0_3b(task: str = "pose", **kwargs: object) -> SapiensViT:
    """ViT-L shape: C=1024, 24 layers, 16 heads."""
    return build_backbone(task, "0.3b", **kwargs)  # type: ignore[arg-type]


def sapiens_0_6b(task: str = "pose", **kwargs: object) -> SapiensViT:
    """ViT-H shape: C=1280, 32 layers, 16 heads."""
    return build_backbone(task, "0.6b", **kwargs)  # type: ignore[arg-type]


def sapiens_1b(task: str = "pose", **kwargs: object) -> SapiensViT:
    """ViT-g shape: C=1536, 40 layers, 24 heads."""
    return build_backbone(task, "1b", **kwargs)  # type: ignore[arg-type]


def sapiens_2b(task: str = "pose", **kwargs: object) -> SapiensViT:
    """C=1920, 48 layers, 32 heads of width 60."""
    return build_backbone(task, "2b", **kwargs)  # type: ignore[arg-type]
