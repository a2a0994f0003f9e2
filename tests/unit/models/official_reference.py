"""An independent re-implementation of the official Sapiens module tree, for tests only.

Module names follow the official checkpoints exactly (``backbone.layers.{i}.ln1``,
``attn.qkv``, ``ffn.layers.0.0``, ``head.deconv_layers.{0,3}``, ``decode_head.conv_seg``, ...),
so its ``state_dict()`` is in the released key format. Attention is written out by hand
(softmax(q k^T / sqrt(d)) v) rather than through SDPA, to cross-check our implementation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.spec import backbone_spec, head_spec


class _Attn(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(b, n, c))


class _FFN(nn.Module):
    def __init__(self, c: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(c, hidden), nn.GELU()), nn.Linear(hidden, c)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class _Layer(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c, eps=1e-6)
        self.attn = _Attn(c, heads)
        self.ln2 = nn.LayerNorm(c, eps=1e-6)
        self.ffn = _FFN(c, 4 * c)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, c: int, padding: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, c, 16, 16, padding=padding)


class OfficialViT(nn.Module):
    def __init__(self, task: str, size: str) -> None:
        super().__init__()
        self.spec = spec = backbone_spec(task, size)
        c, gh, gw = spec.arch.embed_dim, *spec.grid
        self.patch_embed = _PatchEmbed(c, spec.patch_padding)
        extra = 1 if spec.with_cls_token else 0
        if extra:
            self.cls_token = nn.Parameter(torch.randn(1, 1, c) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, extra + gh * gw, c) * 0.02)
        self.layers = nn.ModuleList(_Layer(c, spec.arch.num_heads) for _ in range(spec.arch.depth))
        self.ln1 = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        f = self.patch_embed.projection(x)
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        extra = 1 if self.spec.with_cls_token else 0
        pos = self.pos_embed
        if (h, w) != self.spec.grid:
            g = pos[:, extra:].reshape(1, *self.spec.grid, c).permute(0, 3, 1, 2)
            g = F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False)
            pos = torch.cat((pos[:, :extra], g.flatten(2).transpose(1, 2)), dim=1)
        if extra:
            t = torch.cat((self.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + pos
        for layer in self.layers:
            t = layer(t)
        t = self.ln1(t)[:, extra:]
        return t.transpose(1, 2).reshape(b, c, h, w)


class OfficialHead(nn.Module):
    def __init__(self, task: str, size: str, num_keypoints: int = 308) -> None:
        super().__init__()
        spec = head_spec(task, size, num_keypoints=num_keypoints)
        layers: list[nn.Module] = []
        cin = spec.in_dim
        for cout in spec.deconv_dims:
            layers += [
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False),
                nn.InstanceNorm2d(cout),
                nn.SiLU(),
            ]
            cin = cout
        self.deconv_layers = nn.Sequential(*layers)
        layers = []
        for cout in spec.conv_dims:
            layers += [nn.Conv2d(cin, cout, 1), nn.InstanceNorm2d(cout), nn.SiLU()]
            cin = cout
        self.conv_layers = nn.Sequential(*layers)
        final = nn.Conv2d(cin, spec.out_dim, 1)
        if task == "pose":
            self.final_layer = final
        else:
            self.conv_seg = final
        self.task = task

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_layers(self.deconv_layers(x))
        return self.final_layer(x) if self.task == "pose" else self.conv_seg(x)


class OfficialModel(nn.Module):
    """``backbone`` + ``head`` (pose) or ``decode_head`` (seg/depth/normal); pretrain: no head."""

    def __init__(self, task: str, size: str = "tiny", num_keypoints: int = 308) -> None:
        super().__init__()
        self.backbone = OfficialViT(task, size)
        self.task = task
        if task == "pose":
            self.head = OfficialHead(task, size, num_keypoints)
        elif task != "pretrain":
            self.decode_head = OfficialHead(task, size)
        # Random, non-trivial weights everywhere (biases too).
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn_like(p) * 0.05)
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.add_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        f = self.backbone(x)
        if self.task == "pose":
            return self.head(f)
        if self.task == "pretrain":
            return f
        return self.decode_head(f)
