"""An independent, functional re-implementation of Sapiens2, for tests only.

Written from ``SPEC-sapiens2.md`` alone (section numbers below refer to it). Plain
``torch.nn.functional`` calls on a dict of tensors keyed by the official key names (SPEC §5.2),
without any module of the project's ``models`` package, so it can check the implementation.

* :func:`backbone_forward` -- §2.2-2.6: patch conv, [cls, 8 storage, patches], blocks with
  RMSNorm, QK-norm, GQA (``repeat_interleave``), 2-D RoPE computed op by op in the RoPE dtype
  (bf16 as released; ``rope_dtype=torch.float32`` gives the natural fp32 variant), LayerScale on
  attention only, SwiGLU, final RMSNorm; optional 4K tokenizer.
* :func:`head_forward` -- §3.1-3.4: pose, seg, normal, pointmap (+ scale).
* :func:`make_backbone` / :func:`make_head` -- random state dicts in the official layout, with
  shapes from §1.1, §3 and §5.2; :func:`backbone_shapes` / :func:`head_shapes` give the shapes
  alone (for parameter and key counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

PATCH = 16
N_PREFIX = 9  # cls + 8 storage tokens (§2.2)
N_STORAGE = 8
NORM_EPS = 1e-6  # every RMSNorm of the backbone (§2.3, §2.5)
IN_EPS = 1e-5  # InstanceNorm2d default (§3)
ROPE_BASE = 100.0  # §2.1
WINDOW = 4  # 4K tokenizer window (§2.6)

State = dict[str, Tensor]


# --------------------------------------------------------------------------------------------
# Architecture (§1.1)


@dataclass(frozen=True)
class Arch:
    embed: int
    depth: int
    heads: int
    ffn: int
    kv_heads_gqa: int  # KV heads in the GQA layers
    gqa_layers: tuple[int, ...]
    tokenizer_layers: int = 0  # 0: no tokenizer

    @property
    def head_dim(self) -> int:
        return self.embed // self.heads

    def kv_heads(self, layer: int) -> int:
        return self.kv_heads_gqa if layer in self.gqa_layers else self.heads


def _gqa(depth: int) -> tuple[int, ...]:
    """§1.1: layer i is MHSA when i < 8 or i >= L - 8, GQA otherwise."""
    return tuple(i for i in range(depth) if 8 <= i < depth - 8)


ARCHES: dict[str, Arch] = {
    "0.1b": Arch(768, 12, 12, 3072, 6, _gqa(12)),
    "0.4b": Arch(1024, 24, 16, 4096, 8, _gqa(24)),
    "0.8b": Arch(1280, 32, 16, 5120, 8, _gqa(32)),
    "1b": Arch(1536, 40, 24, 6144, 12, _gqa(40)),
    "1b-4k": Arch(1536, 40, 24, 6144, 12, _gqa(40), tokenizer_layers=4),
    "5b": Arch(2432, 56, 32, 9728, 16, _gqa(56)),
    # Test-only model (not released): blocks 1 and 2 GQA with 2 KV heads, 1 tokenizer layer.
    "tiny-4k": Arch(64, 4, 4, 256, 2, (1, 2), tokenizer_layers=1),
}


# --------------------------------------------------------------------------------------------
# Shapes and random state dicts (§5.2)


def _block_shapes(p: str, arch: Arch, layer: int, *, tokenizer: bool) -> dict[str, tuple]:
    c, hd = arch.embed, arch.head_dim
    kv = arch.heads * hd if tokenizer else arch.kv_heads(layer) * hd
    s: dict[str, tuple] = {
        f"{p}ln1.weight": (c,),
        f"{p}attn.wq.weight": (c, c),
        f"{p}attn.wq.bias": (c,),
        f"{p}attn.wk.weight": (kv, c),
        f"{p}attn.wk.bias": (kv,),
        f"{p}attn.wv.weight": (kv, c),
        f"{p}attn.wv.bias": (kv,),
    }
    if not tokenizer:  # the tokenizer blocks have no QK-norm and no LayerScale (§2.6)
        s[f"{p}attn.q_norm.weight"] = (hd,)
        s[f"{p}attn.k_norm.weight"] = (hd,)
    s[f"{p}attn.proj.weight"] = (c, c)
    s[f"{p}attn.proj.bias"] = (c,)
    if not tokenizer:
        s[f"{p}attn.gamma.weight"] = (c,)
    s.update(
        {
            f"{p}ln2.weight": (c,),
            f"{p}ffn.w12.weight": (2 * arch.ffn, c),
            f"{p}ffn.w12.bias": (2 * arch.ffn,),
            f"{p}ffn.w3.weight": (c, arch.ffn),
            f"{p}ffn.w3.bias": (c,),
        }
    )
    return s


def backbone_shapes(size: str) -> dict[str, tuple]:
    """Bare backbone keys (pretrain-file layout) -> shape; ``rope_embed.periods`` included."""
    arch = ARCHES[size]
    c = arch.embed
    s: dict[str, tuple] = {
        "cls_token": (1, 1, c),
        "storage_tokens": (1, N_STORAGE, c),
        "patch_embed.projection.weight": (c, 3, PATCH, PATCH),
        "patch_embed.projection.bias": (c,),
        "rope_embed.periods": (arch.head_dim // 4,),
    }
    if arch.tokenizer_layers:
        # SPEC §2.6 names `tokenizer.w_cls` and §1.2 counts it as C parameters; its exact shape
        # is not given: (1, 1, C) is assumed, like cls_token.
        s["tokenizer.local_pos_embed"] = (1, WINDOW * WINDOW + 1, c)
        s["tokenizer.w_cls"] = (1, 1, c)
        for i in range(arch.tokenizer_layers):
            s.update(_block_shapes(f"tokenizer.blocks.{i}.", arch, i, tokenizer=True))
    for i in range(arch.depth):
        s.update(_block_shapes(f"blocks.{i}.", arch, i, tokenizer=False))
    s["ln1.weight"] = (c,)
    return s


def _head_widths(task: str, size: str) -> dict[str, tuple[int, ...]]:
    """§3.1-3.4 tables."""
    if task == "pose":
        if size == "1b":
            return {"deconv": (1536, 1024), "conv": (768, 512, 256), "out": (308,)}
        return {"deconv": (1024, 768), "conv": (512, 512, 256), "out": (308,)}
    if task == "seg":
        return {"deconv": (512, 256, 128, 64), "conv": (64, 64), "out": (29,)}
    if task == "normal":
        if size == "5b":
            return {"up": (1536, 768, 512, 256), "conv": (128, 64, 32), "out": (3,)}
        return {"up": (768, 512, 256, 128), "conv": (64, 32, 16), "out": (3,)}
    if task == "pointmap":
        up = (1536, 768, 768, 768) if size == "5b" else (1536, 768, 512, 256)
        conv = (128, 64, 32) if size == "5b" else (64, 32, 16)
        return {"up": up, "conv": conv, "out": (3,), "scale_conv": (1536, 512, 128)}
    raise ValueError(task)


def head_shapes(task: str, size: str, scale_cells: int = 48) -> dict[str, tuple]:
    """Bare head keys (without ``decode_head.``) -> shape. ``scale_cells``: cells of the
    pointmap scale branch's grid after three stride-2 convs (48 for the 1024x768 input)."""
    c = ARCHES[size].embed
    w = _head_widths(task, size)
    s: dict[str, tuple] = {}
    cin = c
    for j, cout in enumerate(w.get("deconv", ())):
        s[f"deconv_layers.{3 * j}.weight"] = (cin, cout, 4, 4)  # ConvTranspose2d, no bias
        cin = cout
    if "up" in w:
        s["input_conv.0.weight"] = (c, c, 3, 3)
        s["input_conv.0.bias"] = (c,)
        for j, cout in enumerate(w["up"]):
            s[f"upsample_blocks.{j}.0.weight"] = (4 * cout, cin, 3, 3)
            s[f"upsample_blocks.{j}.0.bias"] = (4 * cout,)
            cin = cout
    k = 3 if "up" in w else 1
    for j, cout in enumerate(w["conv"]):
        s[f"conv_layers.{3 * j}.weight"] = (cout, cin, k, k)
        s[f"conv_layers.{3 * j}.bias"] = (cout,)
        cin = cout
    name = {"pose": "conv_pose", "seg": "conv_seg", "normal": "conv_normal"}.get(
        task, "conv_pointmap"
    )
    s[f"{name}.weight"] = (w["out"][0], cin, 1, 1)
    s[f"{name}.bias"] = (w["out"][0],)
    if task == "pointmap":
        cin = c
        for j, cout in enumerate(w["scale_conv"]):
            s[f"scale_conv_layers.{3 * j}.weight"] = (cout, cin, 1, 1)
            s[f"scale_conv_layers.{3 * j}.bias"] = (cout,)
            cin = cout
        fin = cin * scale_cells
        for j, fout in zip((1, 3, 5), (512, 128, 1), strict=True):
            s[f"scale_final_layer.{j}.weight"] = (fout, fin)
            s[f"scale_final_layer.{j}.bias"] = (fout,)
            fin = fout
    return s


_NORM_SUFFIXES = ("ln1.weight", "ln2.weight", "q_norm.weight", "k_norm.weight", "gamma.weight")
_TOKEN_KEYS = ("cls_token", "storage_tokens", "tokenizer.local_pos_embed", "tokenizer.w_cls")


def _random(shapes: dict[str, tuple], g: torch.Generator) -> State:
    """Weights that make every path matter: weights N(0, 0.02), biases N(0, 0.02), RMSNorm and
    LayerScale weights 1 + 0.1 N(0, 1), tokens and embeddings N(0, 0.5)."""
    out: State = {}
    for key, shape in shapes.items():
        t = torch.empty(shape)
        if key.endswith(_NORM_SUFFIXES):
            t.normal_(1.0, 0.1, generator=g)
        elif key in _TOKEN_KEYS:
            t.normal_(0.0, 0.5, generator=g)
        else:
            t.normal_(0.0, 0.02, generator=g)
        out[key] = t
    return out


def make_backbone(size: str, seed: int = 0) -> State:
    """A random backbone in the pretrain-file layout (bare keys). ``rope_embed.periods`` is the
    bf16 buffer computed as §2.4 says; everything else is float32."""
    shapes = backbone_shapes(size)
    periods_shape = shapes.pop("rope_embed.periods")
    sd = _random(shapes, torch.Generator().manual_seed(seed))
    sd["rope_embed.periods"] = rope_periods(ARCHES[size].head_dim, torch.bfloat16)
    assert sd["rope_embed.periods"].shape == periods_shape
    return sd


def make_head(task: str, size: str, seed: int = 1, scale_cells: int = 48) -> State:
    """A random head with bare keys (add ``decode_head.`` with :func:`task_state_dict`)."""
    return _random(head_shapes(task, size, scale_cells), torch.Generator().manual_seed(seed))


def task_state_dict(backbone: State, head: State) -> State:
    """The task-file layout: ``backbone.*`` + ``decode_head.*`` (§5.2). Shares the tensors."""
    sd = {f"backbone.{k}": v for k, v in backbone.items()}
    sd.update({f"decode_head.{k}": v for k, v in head.items()})
    return sd


def n_params(shapes: dict[str, tuple]) -> int:
    """Parameters only: the ``rope_embed.periods`` buffer is not one (§1.2)."""
    return sum(math.prod(s) for k, s in shapes.items() if not k.endswith("rope_embed.periods"))


# --------------------------------------------------------------------------------------------
# RoPE (§2.4)


def rope_periods(head_dim: int, dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """periods[i] = base ** (2i / (hd/2)), i < hd/4; arange, division and power in ``dtype``."""
    i = torch.arange(head_dim // 4, dtype=dtype)
    return ROPE_BASE ** (2 * i / (head_dim // 2))


def rope_tables(h: int, w: int, periods: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(sin, cos), each (h*w, hd), every op rounded to ``dtype``; rows of the token grid in
    row-major order; dims [row angles | col angles] tiled twice."""
    periods = periods.to(dtype)
    ys = torch.arange(0.5, h, dtype=dtype) / h * 2 - 1
    xs = torch.arange(0.5, w, dtype=dtype) / w * 2 - 1
    assert ys.numel() == h and xs.numel() == w
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2)
    angles = 2 * math.pi * coords[:, :, None]  # (hw, 2, 1): one rounded op
    angles = angles / periods[None, None, :]  # (hw, 2, hd/4)
    angles = angles.reshape(h * w, -1).tile(2)  # (hw, hd)
    return torch.sin(angles), torch.cos(angles)


def _rotate_half(t: Tensor) -> Tensor:
    t1, t2 = t.chunk(2, dim=-1)
    return torch.cat((-t2, t1), dim=-1)


def apply_rope(t: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """t (B, heads, N, hd): cast to the tables' dtype, rotate the last h*w positions only (the
    9 prefix tokens stay unrotated but rounded), cast back."""
    dtype = t.dtype
    t = t.to(cos.dtype)
    n = cos.shape[0]
    prefix, body = t[:, :, :-n], t[:, :, -n:]
    a = body * cos
    b = _rotate_half(body) * sin
    body = a + b
    return torch.cat((prefix, body), dim=2).to(dtype)


# --------------------------------------------------------------------------------------------
# Backbone (§2.2-2.6)


def rms_norm(x: Tensor, weight: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * weight


def _expand_kv(t: Tensor, groups: int, gqa_expand: str) -> Tensor:
    if groups == 1:
        return t
    if gqa_expand == "interleave":  # the official order (§2.3 step 5)
        return t.repeat_interleave(groups, dim=1)
    if gqa_expand == "tile":  # a wrong order, for tests that must catch it
        return t.repeat(1, groups, 1, 1)
    raise ValueError(gqa_expand)


def _attention(
    sd: State,
    p: str,
    x: Tensor,
    heads: int,
    *,
    qk_norm: bool,
    rope: tuple[Tensor, Tensor] | None,
    gqa_expand: str,
) -> Tensor:
    b, n, c = x.shape
    hd = c // heads
    q = F.linear(x, sd[p + "wq.weight"], sd[p + "wq.bias"])
    k = F.linear(x, sd[p + "wk.weight"], sd[p + "wk.bias"])
    v = F.linear(x, sd[p + "wv.weight"], sd[p + "wv.bias"])
    q = q.reshape(b, n, heads, hd).permute(0, 2, 1, 3)
    kv = k.shape[-1] // hd
    k = k.reshape(b, n, kv, hd).permute(0, 2, 1, 3)
    v = v.reshape(b, n, kv, hd).permute(0, 2, 1, 3)
    if qk_norm:
        q = rms_norm(q, sd[p + "q_norm.weight"])
        k = rms_norm(k, sd[p + "k_norm.weight"])
    else:
        assert p + "q_norm.weight" not in sd
    assert heads % kv == 0
    k = _expand_kv(k, heads // kv, gqa_expand)
    v = _expand_kv(v, heads // kv, gqa_expand)
    if rope is not None:
        q = apply_rope(q, *rope)
        k = apply_rope(k, *rope)
    o = F.scaled_dot_product_attention(q, k, v)
    o = o.permute(0, 2, 1, 3).reshape(b, n, heads * hd)
    return F.linear(o, sd[p + "proj.weight"], sd[p + "proj.bias"])


def _block(
    sd: State,
    p: str,
    x: Tensor,
    heads: int,
    *,
    tokenizer: bool,
    rope: tuple[Tensor, Tensor] | None,
    gqa_expand: str,
) -> Tensor:
    a = _attention(
        sd,
        p + "attn.",
        rms_norm(x, sd[p + "ln1.weight"]),
        heads,
        qk_norm=not tokenizer,
        rope=rope,
        gqa_expand=gqa_expand,
    )
    if not tokenizer:
        a = a * sd[p + "attn.gamma.weight"]  # LayerScale, attention branch only
    else:
        assert p + "attn.gamma.weight" not in sd
    x = x + a
    h = F.linear(
        rms_norm(x, sd[p + "ln2.weight"]), sd[p + "ffn.w12.weight"], sd[p + "ffn.w12.bias"]
    )
    u, gate = h.chunk(2, dim=-1)  # [SiLU input | linear gate]
    return x + F.linear(F.silu(u) * gate, sd[p + "ffn.w3.weight"], sd[p + "ffn.w3.bias"])


def _tokenizer(sd: State, t: Tensor, h: int, w: int, heads: int) -> tuple[Tensor, int, int]:
    """§2.6: 4x4 windows, [w_cls, 16 patches] + local_pos_embed, plain blocks, keep the cls."""
    b, _, c = t.shape
    assert h % WINDOW == 0 and w % WINDOW == 0
    hh, ww = h // WINDOW, w // WINDOW
    win = t.reshape(b, hh, WINDOW, ww, WINDOW, c).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(b * hh * ww, WINDOW * WINDOW, c)
    cls = sd["tokenizer.w_cls"].reshape(1, 1, c).expand(win.shape[0], -1, -1)
    seq = torch.cat((cls, win), dim=1) + sd["tokenizer.local_pos_embed"]
    i = 0
    while f"tokenizer.blocks.{i}.ln1.weight" in sd:
        seq = _block(
            sd,
            f"tokenizer.blocks.{i}.",
            seq,
            heads,
            tokenizer=True,
            rope=None,
            gqa_expand="interleave",
        )
        i += 1
    assert i > 0
    return seq[:, 0].reshape(b, hh * ww, c), hh, ww


def backbone_forward(
    sd: State,
    x: Tensor,
    *,
    rope_dtype: torch.dtype = torch.bfloat16,
    periods: Tensor | None = None,
    gqa_expand: str = "interleave",
    out_type: str = "featmap",
) -> Tensor:
    """``sd``: bare backbone keys. ``periods``: None takes ``rope_embed.periods`` from ``sd``
    (or computes them in ``rope_dtype`` when absent). Returns the featmap (B, C, h, w) or the
    raw tokens (B, 9 + h*w, C)."""
    c = sd["cls_token"].shape[-1]
    hd = sd["blocks.0.attn.q_norm.weight"].shape[0]
    heads = c // hd
    f = F.conv2d(
        x,
        sd["patch_embed.projection.weight"],
        sd["patch_embed.projection.bias"],
        stride=PATCH,
        padding=0,
    )
    b, _, h, w = f.shape
    t = f.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major
    if "tokenizer.w_cls" in sd:
        t, h, w = _tokenizer(sd, t, h, w, heads)
    t = torch.cat(
        (sd["cls_token"].expand(b, -1, -1), sd["storage_tokens"].expand(b, -1, -1), t), dim=1
    )
    if periods is None:
        periods = sd.get("rope_embed.periods")
        if periods is None:
            periods = rope_periods(hd, rope_dtype)
    rope = rope_tables(h, w, periods, rope_dtype)
    i = 0
    while f"blocks.{i}.ln1.weight" in sd:
        t = _block(sd, f"blocks.{i}.", t, heads, tokenizer=False, rope=rope, gqa_expand=gqa_expand)
        i += 1
    t = rms_norm(t, sd["ln1.weight"])
    if out_type == "raw":
        return t
    assert out_type == "featmap"
    return t[:, N_PREFIX:].reshape(b, h, w, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Heads (§3)


def _in_silu(x: Tensor) -> Tensor:
    return F.silu(F.instance_norm(x, eps=IN_EPS))


def _conv_stack(hd: State, name: str, x: Tensor, padding: int) -> Tensor:
    i = 0
    while f"{name}.{i}.weight" in hd:
        x = _in_silu(F.conv2d(x, hd[f"{name}.{i}.weight"], hd[f"{name}.{i}.bias"], padding=padding))
        i += 3
    return x


def _pixel_shuffle_trunk(hd: State, x: Tensor) -> Tensor:
    """normal / pointmap: input_conv, upsample blocks (conv, PixelShuffle(2), IN, SiLU), convs."""
    x = _in_silu(F.conv2d(x, hd["input_conv.0.weight"], hd["input_conv.0.bias"], padding=1))
    j = 0
    while f"upsample_blocks.{j}.0.weight" in hd:
        x = F.conv2d(
            x, hd[f"upsample_blocks.{j}.0.weight"], hd[f"upsample_blocks.{j}.0.bias"], padding=1
        )
        x = _in_silu(F.pixel_shuffle(x, 2))
        j += 1
    return _conv_stack(hd, "conv_layers", x, padding=1)


def head_forward(task: str, hd: State, feats: Tensor) -> dict[str, Tensor]:
    """``hd``: bare head keys (no ``decode_head.``); ``feats``: the backbone featmap."""
    if task == "pretrain":
        return {"features": feats}
    if task in ("pose", "seg"):
        x = feats
        i = 0
        while f"deconv_layers.{i}.weight" in hd:
            x = _in_silu(
                F.conv_transpose2d(x, hd[f"deconv_layers.{i}.weight"], stride=2, padding=1)
            )
            i += 3
        x = _conv_stack(hd, "conv_layers", x, padding=0)
        name = "conv_pose" if task == "pose" else "conv_seg"
        return {task: F.conv2d(x, hd[f"{name}.weight"], hd[f"{name}.bias"])}
    if task == "normal":
        x = _pixel_shuffle_trunk(hd, feats)
        return {"normal": F.conv2d(x, hd["conv_normal.weight"], hd["conv_normal.bias"])}
    if task == "pointmap":
        x = _pixel_shuffle_trunk(hd, feats)
        pointmap = F.conv2d(x, hd["conv_pointmap.weight"], hd["conv_pointmap.bias"])
        s = feats
        i = 0
        while f"scale_conv_layers.{i}.weight" in hd:
            w, bias = hd[f"scale_conv_layers.{i}.weight"], hd[f"scale_conv_layers.{i}.bias"]
            s = _in_silu(F.conv2d(s, w, bias, stride=2))
            i += 3
        s = s.flatten(1)  # (C, H, W) order
        s = F.silu(F.linear(s, hd["scale_final_layer.1.weight"], hd["scale_final_layer.1.bias"]))
        s = F.silu(F.linear(s, hd["scale_final_layer.3.weight"], hd["scale_final_layer.3.bias"]))
        s = F.linear(s, hd["scale_final_layer.5.weight"], hd["scale_final_layer.5.bias"])
        return {"pointmap": pointmap, "pointmap_scale": s}
    raise ValueError(task)


def split_task_state_dict(sd: State) -> tuple[State, State]:
    """A task-file state dict -> (bare backbone, bare head)."""
    bb = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    hd = {k.removeprefix("decode_head."): v for k, v in sd.items() if k.startswith("decode_head.")}
    assert len(bb) + len(hd) == len(sd)
    return bb, hd


def forward(sd: State, x: Tensor, task: str, **backbone_kwargs: object) -> dict[str, Tensor]:
    """The whole model on a file's state dict: ``backbone.*`` + ``decode_head.*`` for a task,
    bare backbone keys for ``task="pretrain"``. Outputs are keyed as the implementation's."""
    if task == "pretrain":
        return {"features": backbone_forward(sd, x, **backbone_kwargs)}  # type: ignore[arg-type]
    bb, hd = split_task_state_dict(sd)
    return head_forward(task, hd, backbone_forward(bb, x, **backbone_kwargs))  # type: ignore[arg-type]
