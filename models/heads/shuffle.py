"""PixelShuffle decoders of Sapiens2: the surface-normal head and the pointmap head."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from models.heads.dense import ConvStage
from models.spec2 import ShuffleHeadSpec

__all__ = ["PointmapHead", "ShuffleHead"]


class ShuffleHead(nn.Module):
    """Feature map (B, C, h, w) -> (B, out, h*2^d, w*2^d) for d upsample blocks (SPEC §3.3).

    ``input_conv`` (3x3 C->C), upsample blocks (3x3 conv to 4x the width, PixelShuffle(2)),
    3x3 convs, each followed by InstanceNorm and SiLU, then the 1x1 output conv with no
    activation: Sapiens2 normals come out unnormalised, at full input resolution.

    Args:
        spec: the head layout.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        spec: ShuffleHeadSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.spec = spec
        c = spec.in_dim
        self.input_conv = ConvStage(nn.Conv2d(c, c, 3, padding=1, **dd))
        dims = (c, *spec.upsample_dims)
        self.upsample_blocks = nn.ModuleList(
            ConvStage(nn.Conv2d(a, 4 * b, 3, padding=1, **dd), upscale=2)
            for a, b in itertools.pairwise(dims)
        )
        dims = (dims[-1], *spec.conv_dims)
        self.convs = nn.ModuleList(
            ConvStage(nn.Conv2d(a, b, 3, padding=1, **dd)) for a, b in itertools.pairwise(dims)
        )
        self.out = nn.Conv2d(dims[-1], spec.out_dim, 1, **dd)

    def decode(self, feats: Tensor) -> Tensor:
        """The dense output (B, out, H, W)."""
        x = self.input_conv(feats)
        for stage in (*self.upsample_blocks, *self.convs):
            x = stage(x)
        return self.out(x)

    def forward(self, feats: Tensor) -> Tensor:
        return self.decode(feats)


class PointmapHead(ShuffleHead):
    """Feature map (B, C, h, w) -> (pointmap (B, 3, 16h, 16w), scale (B, 1)) (SPEC §3.4).

    The pointmap is canonical camera-space XYZ; metric XYZ is ``pointmap / scale`` (left to
    post-processing). The scale branch reads the feature map: stride-2 1x1 convs (each keeps
    the even rows and columns: ceil-halving), flatten in (C, H, W) order and an MLP. The
    MLP's input is sized for ``spec.scale_cells`` cells (48 = 8x6 for a 1024x768 input), so
    this head runs only on inputs whose grid halves to that many cells.

    Args:
        spec: the head layout, with its scale branch.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        spec: ShuffleHeadSpec,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not spec.scale_dims or not spec.scale_hidden:
            raise ValueError("a pointmap head needs scale_dims and scale_hidden")
        super().__init__(spec, device=device, dtype=dtype)
        dd = {"device": device, "dtype": dtype}
        dims = (spec.in_dim, *spec.scale_dims)
        self.scale_convs = nn.ModuleList(
            ConvStage(nn.Conv2d(a, b, 1, stride=2, **dd)) for a, b in itertools.pairwise(dims)
        )
        widths = (spec.scale_in_features, *spec.scale_hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b, **dd), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], 1, **dd))
        self.scale_final_layer = nn.Sequential(*layers)

    def scale(self, feats: Tensor) -> Tensor:
        """The scale (B, 1) predicted from the feature map.

        Raises:
            ValueError: if the grid does not reduce to ``spec.scale_cells`` cells.
        """
        x = feats
        for stage in self.scale_convs:
            x = stage(x)
        if x.shape[-2] * x.shape[-1] != self.spec.scale_cells:
            msg = (
                f"the pointmap scale branch was built for {self.spec.scale_cells} cells, but a "
                f"{feats.shape[-2]}x{feats.shape[-1]} feature grid reduces to "
                f"{x.shape[-2]}x{x.shape[-1]}; use the input size it was built for (1024x768 "
                f"for the released models) or build it with a matching input_size"
            )
            raise ValueError(msg)
        return self.scale_final_layer(x)

    def forward(self, feats: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self.decode(feats), self.scale(feats)
