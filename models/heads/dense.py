"""The decoder head shared by every Sapiens task: upsampling deconvs, 1x1 convs, a projection."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from models.spec import HeadSpec

__all__ = ["ConvStage", "DenseHead"]


class ConvStage(nn.Module):
    """conv -> [PixelShuffle] -> InstanceNorm (no affine, no running stats) -> SiLU.

    Args:
        conv: a ``ConvTranspose2d`` (k=4, s=2, p=1, no bias) or a ``Conv2d`` with bias.
        upscale: PixelShuffle factor r after the conv (1: none); the conv then outputs r*r
            times the stage's channels (torch channel order: 4c + 2i + j -> c at (2y+i, 2x+j)).
    """

    def __init__(self, conv: nn.Module, *, upscale: int = 1) -> None:
        super().__init__()
        self.conv = conv
        channels = conv.out_channels // (upscale * upscale)  # type: ignore[operator]
        self.shuffle = nn.PixelShuffle(upscale) if upscale > 1 else None
        self.norm = nn.InstanceNorm2d(channels)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.shuffle is not None:
            x = self.shuffle(x)
        return self.act(self.norm(x))


class DenseHead(nn.Module):
    """Feature map (B, C, h, w) -> raw task output (B, out, h*2^d, w*2^d) for d deconv stages.

    Pose: 2 deconvs -> (B, K, 4h, 4w) heatmaps. Seg/normal: 3 -> (B, 28|3, 8h, 8w) logits or
    unnormalised normals. Depth: 4 -> (B, 1, 16h, 16w). Sapiens2 pose has the same layout and
    Sapiens2 seg 4 deconvs -> (B, 29, 16h, 16w). No activation on the output; the
    post-processing lives in ``models.postprocess``.

    Args:
        spec: the head layout.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        spec: HeadSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        dims = (spec.in_dim, *spec.deconv_dims)
        self.deconvs = nn.ModuleList(
            ConvStage(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False, **dd))
            for a, b in itertools.pairwise(dims)
        )
        dims = (dims[-1], *spec.conv_dims)
        self.convs = nn.ModuleList(
            ConvStage(nn.Conv2d(a, b, 1, **dd)) for a, b in itertools.pairwise(dims)
        )
        self.out = nn.Conv2d(dims[-1], spec.out_dim, 1, **dd)

    def forward(self, feats: Tensor) -> Tensor:
        x = feats
        for stage in self.deconvs:
            x = stage(x)
        for stage in self.convs:
            x = stage(x)
        return self.out(x)
