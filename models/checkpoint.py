"""Loading released Sapiens and Sapiens2 checkpoints into :class:`~models.sapiens.SapiensModel`.

One entry point, :func:`load_checkpoint`, accepts an official ``.pth`` (read without mmengine
through a restricted unpickler), a Sapiens-lite ``_torchscript.pt2`` / ``_bfloat16.pt2``, a
safetensors file with the official key names (Sapiens or Sapiens2), or a hub name such as
``facebook/sapiens-pose-0.3b-torchscript`` or ``facebook/sapiens2-seg-1b``. The family is told
from the keys (Sapiens2 details: ``models._sapiens2_ckpt``). Official key names are mapped onto
this project's module names; loading is strict and every mismatch is named. Nothing in a file
is executed: TorchScript and ``torch.export`` archives are read as data (``models._formats``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from models import _sapiens2_ckpt as sapiens2
from models._formats import read_state_dict, sha256_of
from models.errors import CheckpointError
from models.hub import download, parse_hub_name
from models.layers import resize_pos_embed
from models.sapiens import CheckpointInfo, SapiensModel, build_model
from models.spec import ARCHES

__all__ = [
    "convert_official",
    "detect_family",
    "infer_size",
    "load_checkpoint",
    "load_state_dict_strict",
    "sapiens2_official_state_dict",
]

logger = logging.getLogger(__name__)

#: Official prefixes that hold no inference weights (MAE decoder, data preprocessor).
DROPPED_PREFIXES: tuple[str, ...] = ("neck.", "data_preprocessor.")
_HEAD_PREFIXES: tuple[str, ...] = ("head.", "decode_head.")

_BACKBONE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(a), b)
    for a, b in (
        (r"^(cls_token|pos_embed)$", r"\1"),
        (r"^patch_embed\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
        (r"^layers\.(\d+)\.ln([12])\.(weight|bias)$", r"blocks.\1.norm\2.\3"),
        (r"^layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$", r"blocks.\1.attn.\2.\3"),
        (r"^layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$", r"blocks.\1.mlp.fc1.\2"),
        (r"^layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)$", r"blocks.\1.mlp.fc2.\2"),
        (r"^ln1\.(weight|bias)$", r"norm.\1"),
    )
)
_HEAD_STAGE = re.compile(r"^(deconv|conv)_layers\.(\d+)\.(weight|bias)$")
_HEAD_OUT = re.compile(r"^(?:final_layer|conv_seg)\.(weight|bias)$")


def _backbone_key(key: str) -> str | None:
    for pattern, repl in _BACKBONE_RULES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return None


def _head_key(key: str) -> str | None:
    if m := _HEAD_OUT.match(key):
        return f"out.{m[1]}"
    if (m := _HEAD_STAGE.match(key)) and int(m[2]) % 3 == 0:
        # Official heads are flat Sequentials (conv, norm, act, conv, ...): the convs sit at
        # indices 0, 3, 6, ...; ours group each triple into one stage.
        return f"{m[1]}s.{int(m[2]) // 3}.conv.{m[3]}"
    return None


def _split(
    official: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Split into (backbone keys, head keys, unknown keys), prefixes removed."""
    wrapped = any(k.startswith("backbone.") for k in official)
    backbone: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in official.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        if not wrapped:
            backbone[key] = value
        elif key.startswith("backbone."):
            backbone[key.removeprefix("backbone.")] = value
        elif key.startswith(_HEAD_PREFIXES):
            head[key.split(".", 1)[1]] = value
        else:
            unknown.append(key)
    return backbone, head, unknown


def _adapt_pos_embed(pos: Tensor, model: SapiensModel) -> Tensor:
    """Mirror the official load hook: drop a cls slot the model lacks, resize the grid."""
    target = model.backbone.pos_embed
    extra = model.backbone.num_extra_tokens
    if pos.shape == target.shape:
        return pos
    n = pos.shape[1]
    if extra == 0 and int((n - 1) ** 0.5) ** 2 == n - 1:
        pos, n = pos[:, 1:], n - 1
    side = round((n - extra) ** 0.5)
    if side * side != n - extra:
        return pos  # not a square grid: leave it for the strict shape check to report
    logger.info("resizing pos_embed from %dx%d to %s", side, side, model.backbone.spec.grid)
    return resize_pos_embed(pos, (side, side), model.backbone.spec.grid, extra_tokens=extra)


def convert_official(official: Mapping[str, Tensor], model: SapiensModel) -> dict[str, Tensor]:
    """Map an official-key state dict onto ``model``'s parameter names.

    Args:
        official: flat dict with ``backbone.``/``head.``/``decode_head.`` prefixes (task
            checkpoints, lite files) or unprefixed (a clean pretrain checkpoint).
        model: the target; head keys go to its single head.

    Returns:
        ``{our key: tensor}``; keys that match no rule keep an ``unmapped:`` prefix so the strict
        check reports them by their official name.
    """
    backbone, head, unknown = _split(official)
    out: dict[str, Tensor] = {f"unmapped:{k}": official[k] for k in unknown}
    for key, value in backbone.items():
        ours = _backbone_key(key)
        if ours == "pos_embed":
            value = _adapt_pos_embed(value, model)
        out[f"backbone.{ours}" if ours else f"unmapped:backbone.{key}"] = value
    if head and len(model.tasks) != 1:
        msg = (
            f"checkpoint has head weights but the model has {len(model.tasks)} heads "
            f"{list(model.tasks)}; load one task per checkpoint"
        )
        raise CheckpointError(msg)
    for key, value in head.items():
        ours = _head_key(key)
        out[f"heads.{model.tasks[0]}.{ours}" if ours else f"unmapped:head.{key}"] = value
    return out


def load_state_dict_strict(
    model: SapiensModel, state: Mapping[str, Tensor], *, origin: str
) -> None:
    """Assign ``state`` to ``model``; any missing, unexpected or misshapen key raises.

    Each tensor is cast to the dtype of the entry it replaces: a bfloat16 file fills a float32
    model, and the Sapiens2 RoPE ``periods`` stay bfloat16 whatever the file stores.

    Raises:
        CheckpointError: listing up to 10 keys of each kind and naming ``origin``.
    """
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(k.removeprefix("unmapped:") for k in state.keys() - expected.keys())
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{name} ({len(keys)}): {keys[:10]}"
            for name, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", shapes),
            )
            if keys
        ]
        raise CheckpointError(f"{origin} does not fit the model: " + "; ".join(parts))
    cast = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=True, assign=True)


def infer_size(official: Mapping[str, Tensor]) -> str:
    """Backbone size from the patch-embed width and the layer count of an official state dict."""
    backbone, _, _ = _split(official)
    weight = backbone.get("patch_embed.projection.weight")
    if weight is None:
        raise CheckpointError("cannot infer the size: no patch_embed.projection.weight key")
    depth = len({k.split(".")[1] for k in backbone if k.startswith("layers.")})
    for name, arch in ARCHES.items():
        if arch.embed_dim == weight.shape[0] and arch.depth == depth:
            return name
    raise CheckpointError(f"no Sapiens size has width {weight.shape[0]} and depth {depth}")


def _num_keypoints(official: Mapping[str, Tensor]) -> int:
    _, head, _ = _split(official)
    bias = head.get("final_layer.bias")
    return int(bias.shape[0]) if bias is not None else 308


def detect_family(official: Mapping[str, Tensor]) -> str:
    """``sapiens2`` when an official state dict has Sapiens2 keys (storage tokens, RoPE periods,
    separate q/k/v projections), else ``sapiens``."""
    return "sapiens2" if sapiens2.is_sapiens2(official) else "sapiens"


def sapiens2_official_state_dict(model: SapiensModel) -> dict[str, Tensor]:
    """A one-task (or pretrain) Sapiens2 model's weights under the official key names, as the
    released safetensors files hold them (``backbone.``/``decode_head.`` or bare keys)."""
    if model.family != "sapiens2":
        raise ValueError(f"expected a Sapiens2 model, got family {model.family!r}")
    return sapiens2.to_official(model)


def _resolve(
    source: str | Path, task: str, hub_kwargs: Mapping[str, object]
) -> tuple[Path, str, str | None]:
    """(local file, task, family named by a hub name or None)."""
    path = Path(source)
    if path.is_file():
        return path, task, None
    ref = parse_hub_name(str(source))
    if ref is None:
        msg = (
            f"{source!r} is neither a file nor a hub name like 'facebook/sapiens-pose-0.3b' or "
            f"'facebook/sapiens2-pose-0.4b'"
        )
        raise CheckpointError(msg)
    if task and task != ref.task:
        raise CheckpointError(f"{source!r} is a {ref.task} checkpoint, but task={task!r}")
    return download(ref, **hub_kwargs), ref.task, ref.family  # type: ignore[arg-type]


def _family_of(official: Mapping[str, Tensor], path: Path, *wanted: str | None) -> str:
    """The family the keys show; each ``wanted`` family given must be it."""
    found = detect_family(official)
    for family in wanted:
        if family and family != found:
            raise CheckpointError(f"{path} holds a {found} checkpoint, not {family}")
    return found


def _build_sapiens1(
    official: Mapping[str, Tensor],
    path: Path,
    task: str,
    size: str | None,
    dtype: torch.dtype | None,
) -> tuple[SapiensModel, dict[str, Tensor]]:
    if not task:
        raise CheckpointError(f"task is required to load {path}")
    tasks = () if task == "pretrain" else (task,)
    model = build_model(
        tasks,
        size or infer_size(official),
        backbone_task=task,
        device="meta",
        dtype=dtype,
        num_keypoints=_num_keypoints(official) if task == "pose" else 308,
    )
    return model, convert_official(official, model)


def load_checkpoint(
    source: str | Path,
    *,
    task: str = "",
    size: str | None = None,
    family: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    hasher: Callable[[Path], str] = sha256_of,
) -> SapiensModel:
    """Build the model that ``source`` holds and load its weights strictly.

    Args:
        source: a checkpoint file (``.pth``, ``.pt2``, ``.safetensors``) or a hub name
            ``facebook/sapiens-<task>-<size>[-torchscript|-bfloat16]`` or
            ``facebook/sapiens2-<task>-<size>``.
        task: Sapiens: ``pose``, ``seg``, ``depth``, ``normal`` or ``pretrain`` (required
            unless a hub name gives it). Sapiens2: inferred from the head keys (``pose``,
            ``seg``, ``normal``, ``pointmap``; none: ``pretrain``); if given, it must agree.
        size: backbone size; inferred from the weights when omitted.
        family: ``sapiens`` or ``sapiens2``; inferred from the keys, and checked if given.
        device: where the model lives.
        dtype: parameter dtype (default: float32; the Sapiens2 RoPE periods stay bfloat16).
        revision: hub revision.
        cache_dir: hub cache directory (default: huggingface_hub's).
        local_files_only: never touch the network.
        hasher: file digest function recorded in the model's provenance.

    Raises:
        CheckpointError: unreadable file, unsafe pickle, another family or task than asked,
            or keys/shapes that do not fit.
        CheckpointNotFoundError: the file is neither local, cached nor downloadable.
    """
    path, task, named = _resolve(
        source,
        task,
        {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only},
    )
    official, fmt = read_state_dict(path)
    if _family_of(official, path, family, named) == "sapiens2":
        model = sapiens2.build_for(official, task=task, size=size, dtype=dtype)
        state = sapiens2.from_official(official, model)
    else:
        model, state = _build_sapiens1(official, path, task, size, dtype)
    load_state_dict_strict(model, state, origin=f"{path} ({fmt})")
    info = CheckpointInfo(source=str(source), path=str(path), fmt=fmt, sha256=hasher(path))
    model.checkpoints = {part: info for part in ("backbone", *model.tasks)}
    return model.to(device or "cpu").eval()
