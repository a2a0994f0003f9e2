"""Sapiens2 checkpoints: official key names (SPEC §5.2), strict loading, inference of family, size
and task, and hub names (SPEC §5.1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import (
    CheckpointError,
    build_model,
    detect_family,
    load_checkpoint,
    sapiens2_official_state_dict,
)
from models.layers import rope_periods

# SPEC §5.2 key counts: size -> (pretrain, pose, seg, normal, pointmap).
KEY_COUNTS = {
    "0.1b": (210, None, None, None, None),
    "0.4b": (414, 424, 424, 432, 444),
    "0.8b": (550, 560, 560, 568, 580),
    "1b": (686, 696, 696, 704, 716),
    "1b-4k": (744, None, None, None, None),
    "5b": (958, 968, 968, 976, 988),
}
TASKS = ("pose", "seg", "normal", "pointmap")
# (C, layers, head dim, GQA KV rows, tokenizer layers), SPEC §1.1 and §5.2.
ARCH = {
    "0.4b": (1024, 24, 64, 512, 0),
    "1b-4k": (1536, 40, 64, 768, 4),
    "5b": (2432, 56, 76, 1216, 0),
}


def _official(task: str | None, size: str, **kwargs: object) -> dict[str, torch.Tensor]:
    model = build_model([task] if task else [], size, family="sapiens2", **kwargs)  # type: ignore[arg-type]
    return sapiens2_official_state_dict(model)


@pytest.mark.parametrize("size", KEY_COUNTS)
def test_official_key_counts(size: str) -> None:
    counts = KEY_COUNTS[size]
    assert len(_official(None, size, device="meta")) == counts[0]
    for task, expected in zip(TASKS, counts[1:], strict=True):
        if expected is not None:
            assert len(_official(task, size, device="meta")) == expected, task


def _backbone_keys(size: str) -> dict[str, tuple[int, ...]]:
    """Every backbone key and shape, written out from SPEC §5.2 and §2.6."""
    c, layers, hd, kv_rows, tok_layers = ARCH[size]
    keys: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, c),
        "storage_tokens": (1, 8, c),
        "patch_embed.projection.weight": (c, 3, 16, 16),
        "patch_embed.projection.bias": (c,),
        "rope_embed.periods": (hd // 4,),
        "ln1.weight": (c,),
    }
    for i in range(layers):
        kv = kv_rows if 8 <= i < layers - 8 else c
        for name, shape in (
            ("ln1.weight", (c,)),
            ("attn.wq.weight", (c, c)),
            ("attn.wq.bias", (c,)),
            ("attn.wk.weight", (kv, c)),
            ("attn.wk.bias", (kv,)),
            ("attn.wv.weight", (kv, c)),
            ("attn.wv.bias", (kv,)),
            ("attn.q_norm.weight", (hd,)),
            ("attn.k_norm.weight", (hd,)),
            ("attn.proj.weight", (c, c)),
            ("attn.proj.bias", (c,)),
            ("attn.gamma.weight", (c,)),
            ("ln2.weight", (c,)),
            ("ffn.w12.weight", (8 * c, c)),
            ("ffn.w12.bias", (8 * c,)),
            ("ffn.w3.weight", (c, 4 * c)),
            ("ffn.w3.bias", (c,)),
        ):
            keys[f"blocks.{i}.{name}"] = shape
    if tok_layers:
        keys["tokenizer.local_pos_embed"] = (1, 17, c)
        keys["tokenizer.w_cls"] = (1, 1, c)  # shape not in the spec: our choice
    for j in range(tok_layers):
        for name in ("ln1", "ln2"):
            keys[f"tokenizer.blocks.{j}.{name}.weight"] = (c,)
        for name, (rows, cols) in (
            ("attn.wq", (c, c)),
            ("attn.wk", (c, c)),
            ("attn.wv", (c, c)),
            ("attn.proj", (c, c)),
            ("ffn.w12", (8 * c, c)),
            ("ffn.w3", (c, 4 * c)),
        ):
            keys[f"tokenizer.blocks.{j}.{name}.weight"] = (rows, cols)
            keys[f"tokenizer.blocks.{j}.{name}.bias"] = (rows,)
    return keys


def _conv(prefix: str, shapes: list[tuple[int, ...]], bias: bool = True) -> dict:
    out: dict[str, tuple[int, ...]] = {}
    for i, shape in enumerate(shapes):
        idx = prefix.format(i=i, i3=3 * i)
        out[f"{idx}.weight"] = shape
        if bias:
            out[f"{idx}.bias"] = (shape[1] if "deconv" in prefix else shape[0],)
    return out


# SPEC §5.2 head keys of 0.4b.
HEAD_04B = {
    "pose": {
        **_conv("deconv_layers.{i3}", [(1024, 1024, 4, 4), (1024, 768, 4, 4)], bias=False),
        **_conv("conv_layers.{i3}", [(512, 768, 1, 1), (512, 512, 1, 1), (256, 512, 1, 1)]),
        **_conv("conv_pose", [(308, 256, 1, 1)]),
    },
    "seg": {
        **_conv(
            "deconv_layers.{i3}",
            [(1024, 512, 4, 4), (512, 256, 4, 4), (256, 128, 4, 4), (128, 64, 4, 4)],
            bias=False,
        ),
        **_conv("conv_layers.{i3}", [(64, 64, 1, 1), (64, 64, 1, 1)]),
        **_conv("conv_seg", [(29, 64, 1, 1)]),
    },
    "normal": {
        **_conv("input_conv.0", [(1024, 1024, 3, 3)]),
        **_conv(
            "upsample_blocks.{i}.0",
            [(3072, 1024, 3, 3), (2048, 768, 3, 3), (1024, 512, 3, 3), (512, 256, 3, 3)],
        ),
        **_conv("conv_layers.{i3}", [(64, 128, 3, 3), (32, 64, 3, 3), (16, 32, 3, 3)]),
        **_conv("conv_normal", [(3, 16, 1, 1)]),
    },
    "pointmap": {
        **_conv("input_conv.0", [(1024, 1024, 3, 3)]),
        **_conv(
            "upsample_blocks.{i}.0",
            [(6144, 1024, 3, 3), (3072, 1536, 3, 3), (2048, 768, 3, 3), (1024, 512, 3, 3)],
        ),
        **_conv("conv_layers.{i3}", [(64, 256, 3, 3), (32, 64, 3, 3), (16, 32, 3, 3)]),
        **_conv(
            "scale_conv_layers.{i3}", [(1536, 1024, 1, 1), (512, 1536, 1, 1), (128, 512, 1, 1)]
        ),
        **{
            f"scale_final_layer.{i}.{p}": shape if p == "weight" else shape[:1]
            for i, shape in ((1, (512, 6144)), (3, (128, 512)), (5, (1, 128)))
            for p in ("weight", "bias")
        },
        **_conv("conv_pointmap", [(3, 16, 1, 1)]),
    },
}


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("size", ["0.4b", "1b-4k", "5b"])
def test_pretrain_key_names_and_shapes(size: str) -> None:
    assert _shapes(_official(None, size, device="meta")) == _backbone_keys(size)


@pytest.mark.parametrize("task", TASKS)
def test_task_key_names_and_shapes(task: str) -> None:
    expected = {f"backbone.{k}": v for k, v in _backbone_keys("0.4b").items()}
    expected.update({f"decode_head.{k}": v for k, v in HEAD_04B[task].items()})
    assert _shapes(_official(task, "0.4b", device="meta")) == expected


# --- loading -----------------------------------------------------------------------------------


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def _image(h: int = 256, w: int = 192) -> torch.Tensor:
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("task", "size"),
    [("pose", "tiny"), ("seg", "tiny"), ("normal", "tiny"), ("pointmap", "tiny"),
     (None, "tiny"), (None, "tiny-4k")],
)  # fmt: skip
def test_round_trip_infers_family_size_and_task(
    tmp_path: Path, task: str | None, size: str
) -> None:
    source = build_model(
        [task] if task else [], size, family="sapiens2", input_size=(256, 192)
    ).eval()
    path = _save(sapiens2_official_state_dict(source), tmp_path / "w.safetensors")
    model = load_checkpoint(path)
    assert (model.family, model.size, model.tasks) == ("sapiens2", size, (task,) if task else ())
    assert not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert model.backbone.rope_embed.periods.dtype == torch.bfloat16
    assert model.checkpoints["backbone"].fmt == "safetensors"
    x = _image()
    with torch.no_grad():
        expected, got = source(x), model(x)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def _tiny_pose_file(tmp_path: Path, edit: Callable[[dict], object] | None = None) -> Path:
    state = _official("pose", "tiny")
    if edit is not None:
        edit(state)
    return _save(state, tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda s: s.pop("backbone.blocks.1.attn.wk.weight"),
            r"missing \(1\): \['backbone.blocks.1.attn.wk.weight'\]",
        ),
        (
            lambda s: s.pop("decode_head.conv_layers.3.bias"),
            r"missing \(1\): \['heads.pose.convs.1.conv.bias'\]",
        ),
        (
            lambda s: s.__setitem__("decode_head.conv_layers.1.weight", torch.zeros(1)),
            r"unexpected \(1\): \['decode_head.conv_layers.1.weight'\]",
        ),
        (
            lambda s: s.__setitem__("backbone.blocks.0.attn.extra", torch.zeros(1)),
            r"unexpected \(1\): \['backbone.blocks.0.attn.extra'\]",
        ),
        (lambda s: s.__setitem__("neck.weight", torch.zeros(1)), r"unexpected .*'neck.weight'"),
        (
            lambda s: s.__setitem__("backbone.blocks.1.attn.wk.weight", torch.zeros(64, 64)),
            r"shape mismatch .*backbone.blocks.1.attn.wk.weight: checkpoint \(64, 64\) vs model",
        ),
    ],
)
def test_mismatches_are_named(tmp_path: Path, edit: Callable[[dict], object], match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_tiny_pose_file(tmp_path, edit))


def test_periods_in_the_file_win_and_stay_bf16(tmp_path: Path) -> None:
    stored = torch.tensor([1.0, 3.0, 9.0, 27.0])  # float32 in the file
    path = _tiny_pose_file(tmp_path, lambda s: s.__setitem__("backbone.rope_embed.periods", stored))
    model = load_checkpoint(path)
    periods = model.backbone.rope_embed.periods
    assert periods.dtype == torch.bfloat16
    assert periods.float().tolist() == stored.tolist()


def test_a_file_without_periods_gets_the_bf16_computed_ones(tmp_path: Path) -> None:
    model = load_checkpoint(
        _tiny_pose_file(tmp_path, lambda s: s.pop("backbone.rope_embed.periods"))
    )
    assert torch.equal(model.backbone.rope_embed.periods, rope_periods(16))


def test_bf16_file_loads_into_float32_parameters(tmp_path: Path) -> None:
    state = {k: v.bfloat16() for k, v in _official("seg", "tiny").items()}
    model = load_checkpoint(_save(state, tmp_path / "w.safetensors"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    loaded = sapiens2_official_state_dict(model)
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in state.items())


@pytest.mark.parametrize(("input_size", "cells"), [((256, 192), 4), ((1024, 768), 48)])
def test_pointmap_scale_mlp_width_comes_from_the_file(
    tmp_path: Path, input_size: tuple[int, int], cells: int
) -> None:
    path = _save(_official("pointmap", "tiny", input_size=input_size), tmp_path / "w.safetensors")
    head = load_checkpoint(path).heads["pointmap"]
    assert head.spec.scale_cells == cells
    assert head.scale_final_layer[1].in_features == 8 * cells


def test_pose_keypoints_come_from_the_file(tmp_path: Path) -> None:
    path = _save(_official("pose", "tiny", num_keypoints=17), tmp_path / "w.safetensors")
    model = load_checkpoint(path)
    with torch.no_grad():
        assert model(_image())["pose"].shape == (2, 17, 64, 48)


def test_window_cls_of_another_layout_is_reshaped(tmp_path: Path) -> None:
    state = _official(None, "tiny-4k")
    state["tokenizer.w_cls"] = state["tokenizer.w_cls"].reshape(64)
    model = load_checkpoint(_save(state, tmp_path / "w.safetensors"))
    assert model.backbone.tokenizer.w_cls.shape == (1, 1, 64)


def test_family_and_task_must_agree_with_the_file(tmp_path: Path) -> None:
    path = _tiny_pose_file(tmp_path)
    assert load_checkpoint(path, task="pose", family="sapiens2").tasks == ("pose",)
    with pytest.raises(CheckpointError, match="holds a sapiens2 checkpoint, not sapiens"):
        load_checkpoint(path, family="sapiens")
    with pytest.raises(CheckpointError, match="holds a Sapiens2 pose model, not seg"):
        load_checkpoint(path, task="seg")


def test_family_detection() -> None:
    assert detect_family(_official(None, "tiny", device="meta")) == "sapiens2"
    assert detect_family(_official("seg", "tiny", device="meta")) == "sapiens2"
    v1 = {"backbone.layers.0.attn.qkv.weight": torch.zeros(1), "backbone.pos_embed": torch.zeros(1)}
    assert detect_family(v1) == "sapiens"


def test_head_keys_without_an_output_conv_name_no_task(tmp_path: Path) -> None:
    path = _tiny_pose_file(
        tmp_path,
        lambda s: [
            s.pop(k) for k in ("decode_head.conv_pose.weight", "decode_head.conv_pose.bias")
        ],
    )
    with pytest.raises(CheckpointError, match="cannot tell the task"):
        load_checkpoint(path)


def test_unknown_width_is_reported(tmp_path: Path) -> None:
    state = _official(None, "tiny")
    state["patch_embed.projection.weight"] = torch.zeros(96, 3, 16, 16)
    with pytest.raises(CheckpointError, match="no Sapiens2 size has width 96, 4 layers"):
        load_checkpoint(_save(state, tmp_path / "w.safetensors"))
