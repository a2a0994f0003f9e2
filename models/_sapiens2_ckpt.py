"""Official Sapiens2 checkpoints: what a state dict holds, and its keys in our module names.

Task files carry ``backbone.*`` and ``decode_head.*`` keys, pretrain files the bare backbone
keys (SPEC §5.2). Our backbone uses the official module names except the patch conv
(``patch_embed.proj``); the heads group each (conv, norm, act) triple of the official flat
Sequentials into one ``ConvStage``, so their indices differ. Both directions are here:
:func:`from_official` for loading and :func:`to_official` for writing official-format files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from models.backbone2 import build_backbone2
from models.errors import CheckpointError
from models.heads import head_from_spec
from models.layers import rope_periods
from models.sapiens import SapiensModel
from models.spec2 import SAPIENS2_ARCHES, head_spec2

__all__ = [
    "build_for",
    "from_official",
    "infer_size2",
    "infer_task2",
    "is_sapiens2",
    "to_official",
]

_BACKBONE, _HEAD = "backbone.", "decode_head."
_V2_BLOCK = re.compile(r"^blocks\.\d+\.attn\.(wq|wk|wv)\.weight$")
#: Output conv of each Sapiens2 head -> its task.
_OUT_CONVS = {f"conv_{task}": task for task in ("pose", "seg", "normal", "pointmap")}
_PERIODS = "rope_embed.periods"
#: The patch conv: official name, ours (``PatchEmbed.proj``).
_PATCH_OFFICIAL, _PATCH_OURS = "patch_embed.projection.", "patch_embed.proj."

# Official head key -> ours. Flat Sequentials put a conv at every third index.
_HEAD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(a), b)
    for a, b in (
        (r"^deconv_layers\.(\d+)\.(weight|bias)$", "deconvs.{0}.conv.{1}"),
        (r"^conv_layers\.(\d+)\.(weight|bias)$", "convs.{0}.conv.{1}"),
        (r"^scale_conv_layers\.(\d+)\.(weight|bias)$", "scale_convs.{0}.conv.{1}"),
        (r"^upsample_blocks\.(\d+)\.0\.(weight|bias)$", "upsample_blocks.{0}.conv.{1}"),
        (r"^input_conv\.0\.(weight|bias)$", "input_conv.conv.{0}"),
        (r"^conv_(?:pose|seg|normal|pointmap)\.(weight|bias)$", "out.{0}"),
        (r"^scale_final_layer\.(\d+)\.(weight|bias)$", "scale_final_layer.{0}.{1}"),
    )
)
_STRIDED = ("deconv_layers", "conv_layers", "scale_conv_layers")


def _strip(key: str) -> str:
    return key.removeprefix(_BACKBONE)


def _swap_prefix(key: str, old: str, new: str) -> str:
    return new + key.removeprefix(old) if key.startswith(old) else key


def is_sapiens2(official: Mapping[str, Tensor]) -> bool:
    """True when the keys are Sapiens2's (storage tokens, RoPE periods, split q/k/v)."""
    return any(
        _strip(k) in ("storage_tokens", _PERIODS) or _V2_BLOCK.match(_strip(k)) for k in official
    )


def split(
    official: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """(backbone keys, head keys, unknown keys), prefixes removed. Unprefixed files (pretrain)
    are all backbone."""
    if not any(k.startswith((_BACKBONE, _HEAD)) for k in official):
        return dict(official), {}, []
    backbone: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in official.items():
        if key.startswith(_BACKBONE):
            backbone[key.removeprefix(_BACKBONE)] = value
        elif key.startswith(_HEAD):
            head[key.removeprefix(_HEAD)] = value
        else:
            unknown.append(key)
    return backbone, head, unknown


def infer_task2(head: Mapping[str, Tensor]) -> str:
    """The task of a head from its output conv; ``pretrain`` for no head keys."""
    if not head:
        return "pretrain"
    found = {_OUT_CONVS[k.split(".")[0]] for k in head if k.split(".")[0] in _OUT_CONVS}
    if len(found) != 1:
        msg = (
            f"cannot tell the task from the head keys: expected exactly one of "
            f"{sorted(_OUT_CONVS)}, found {sorted(found) or 'none'}"
        )
        raise CheckpointError(msg)
    return found.pop()


def infer_size2(backbone: Mapping[str, Tensor]) -> str:
    """The size from the patch-conv width, the block count and the tokenizer's presence."""
    weight = backbone.get("patch_embed.projection.weight")
    if weight is None:
        raise CheckpointError("cannot infer the size: no patch_embed.projection.weight key")
    width = int(weight.shape[0])
    depth = len({k.split(".")[1] for k in backbone if k.startswith("blocks.")})
    tokenizer = len({k.split(".")[2] for k in backbone if k.startswith("tokenizer.blocks.")})
    for name, arch in SAPIENS2_ARCHES.items():
        if (arch.embed_dim, arch.depth, arch.tokenizer_layers) == (width, depth, tokenizer):
            return name
    msg = (
        f"no Sapiens2 size has width {width}, {depth} layers and {tokenizer} tokenizer layers; "
        f"sizes: {list(SAPIENS2_ARCHES)}"
    )
    raise CheckpointError(msg)


def build_for(
    official: Mapping[str, Tensor],
    *,
    task: str = "",
    size: str | None = None,
    dtype: torch.dtype | None = None,
) -> SapiensModel:
    """An empty (meta-device) model shaped for ``official``: task from the head keys, size
    from the backbone, pose keypoints from ``conv_pose.bias``, the pointmap scale MLP from
    ``scale_final_layer.1.weight``.

    Raises:
        CheckpointError: the keys name no task, another task than ``task``, or no size.
    """
    backbone, head, _ = split(official)
    found = infer_task2(head)
    if task and task != found:
        raise CheckpointError(f"the checkpoint holds a Sapiens2 {found} model, not {task}")
    size = size or infer_size2(backbone)
    dd = {"device": "meta", "dtype": dtype}
    heads = {}
    if found != "pretrain":
        spec = head_spec2(found, size, num_keypoints=_num_keypoints(head))
        if found == "pointmap":
            spec = head_spec2(found, size, scale_cells=_scale_cells(head, spec.scale_dims[-1]))
        heads[found] = head_from_spec(spec, **dd)  # type: ignore[arg-type]
    return SapiensModel(build_backbone2(size, **dd), heads)  # type: ignore[arg-type]


def _num_keypoints(head: Mapping[str, Tensor]) -> int:
    bias = head.get("conv_pose.bias")
    return int(bias.shape[0]) if bias is not None else 308


def _scale_cells(head: Mapping[str, Tensor], channels: int) -> int | None:
    weight = head.get("scale_final_layer.1.weight")
    if weight is None or weight.ndim != 2:
        return None  # the strict check names the missing or misshapen key
    if weight.shape[1] % channels:
        msg = (
            f"scale_final_layer.1.weight has {weight.shape[1]} inputs, expected a multiple of "
            f"the {channels} scale channels"
        )
        raise CheckpointError(msg)
    return int(weight.shape[1]) // channels


def _head_key(key: str) -> str | None:
    for pattern, template in _HEAD_RULES:
        if m := pattern.match(key):
            groups = list(m.groups())
            if key.startswith(_STRIDED):
                if int(groups[0]) % 3:
                    return None  # norm/act slots have no weights: not an official key
                groups[0] = str(int(groups[0]) // 3)
            return template.format(*groups)
    return None


def from_official(official: Mapping[str, Tensor], model: SapiensModel) -> dict[str, Tensor]:
    """Map an official Sapiens2 state dict onto ``model``'s names.

    Keys that match no rule keep an ``unmapped:`` prefix, so the strict check reports them by
    their official name. A file without ``rope_embed.periods`` gets the bfloat16-computed
    periods; a tokenizer ``w_cls`` of C values in another layout is reshaped to (1, 1, C).
    """
    backbone, head, unknown = split(official)
    out: dict[str, Tensor] = {f"unmapped:{k}": official[k] for k in unknown}
    for key, value in backbone.items():
        out[f"backbone.{_swap_prefix(key, _PATCH_OFFICIAL, _PATCH_OURS)}"] = value
    if _PERIODS not in backbone:
        out[f"backbone.{_PERIODS}"] = rope_periods(model.backbone.spec.arch.head_dim)
    w_cls = out.get("backbone.tokenizer.w_cls")
    if w_cls is not None and w_cls.numel() == model.backbone.embed_dim:
        out["backbone.tokenizer.w_cls"] = w_cls.reshape(1, 1, -1)
    task = model.tasks[0] if model.tasks else ""
    for key, value in head.items():
        ours = _head_key(key)
        out[f"heads.{task}.{ours}" if ours and task else f"unmapped:{_HEAD}{key}"] = value
    return out


def _official_head_key(key: str, task: str) -> str:
    parts = key.split(".")
    names = {"deconvs": "deconv_layers", "convs": "conv_layers", "scale_convs": "scale_conv_layers"}
    if parts[0] in names:
        return f"{names[parts[0]]}.{int(parts[1]) * 3}.{parts[-1]}"
    if parts[0] == "upsample_blocks":
        return f"upsample_blocks.{parts[1]}.0.{parts[-1]}"
    if parts[0] == "input_conv":
        return f"input_conv.0.{parts[-1]}"
    if parts[0] == "out":
        return f"conv_{task}.{parts[-1]}"
    return key


def to_official(model: SapiensModel) -> dict[str, Tensor]:
    """``model``'s state dict under the official Sapiens2 key names: ``backbone.`` and
    ``decode_head.`` prefixes for a task model, bare backbone keys for a pretrain model."""
    if len(model.tasks) > 1:
        raise ValueError(f"official files hold one task, the model has {list(model.tasks)}")
    task = model.tasks[0] if model.tasks else ""
    prefix = _BACKBONE if task else ""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            bare = key.removeprefix("backbone.")
            out[prefix + _swap_prefix(bare, _PATCH_OURS, _PATCH_OFFICIAL)] = value
        else:
            out[_HEAD + _official_head_key(key.removeprefix(f"heads.{task}."), task)] = value
    return out
