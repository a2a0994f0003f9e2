"""Sapiens2 architecture: parameter counts equal SPEC-sapiens2 §1.2 exactly, on the meta device."""

from __future__ import annotations

import pytest
import torch

from models import SAPIENS2_ARCHES, build_model
from models.spec2 import Sapiens2Arch, head_spec2, pointmap_scale_cells

HEADS = ("pose", "seg", "normal", "pointmap")

# size -> backbone (= pretrain file) parameters, SPEC §1.2.
BACKBONE = {
    "0.1b": 113_993_472,
    "0.4b": 395_450_368,
    "0.8b": 814_283_520,
    "1b": 1_455_474_176,
    "1b-4k": 1_606_588_928,
    "5b": 5_066_902_976,
}
# size -> (pose, seg, normal, pointmap) head parameters, SPEC §1.2.
HEAD = {
    "0.4b": (30_226_996, 11_151_325, 57_907_363, 133_224_996),
    "0.8b": (34_421_300, 13_248_477, 70_293_923, 153_082_660),
    "1b": (64_305_972, 15_345_629, 83_860_131, 174_119_972),
    "5b": (53_295_668, 22_685_661, 249_455_299, 281_442_884),
}
# size -> (pose, seg, normal, pointmap) whole task models, SPEC §1.2.
WHOLE = {
    "0.4b": (425_677_364, 406_601_693, 453_357_731, 528_675_364),
    "0.8b": (848_704_820, 827_531_997, 884_577_443, 967_366_180),
    "1b": (1_519_780_148, 1_470_819_805, 1_539_334_307, 1_629_594_148),
    "5b": (5_120_198_644, 5_089_588_637, 5_316_358_275, 5_348_345_860),
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("size", "expected"), BACKBONE.items())
def test_backbone_parameter_counts(size: str, expected: int) -> None:
    model = build_model([], size, family="sapiens2", device="meta")
    assert _count(model) == expected
    assert model.family == "sapiens2"
    assert model.size == size


def test_4k_tokenizer_parameter_count() -> None:
    tokenizer = build_model([], "1b-4k", family="sapiens2", device="meta").backbone.tokenizer
    assert tokenizer is not None
    assert _count(tokenizer) == 151_114_752


@pytest.mark.parametrize("size", HEAD)
def test_head_and_task_model_parameter_counts(size: str) -> None:
    for task, head, whole in zip(HEADS, HEAD[size], WHOLE[size], strict=True):
        model = build_model([task], size, family="sapiens2", device="meta")
        assert _count(model.heads[task]) == head, (size, task)
        assert _count(model) == whole, (size, task)


def test_the_rope_periods_are_a_bf16_buffer_not_a_parameter() -> None:
    model = build_model([], "0.4b", family="sapiens2", device="meta", dtype=torch.float32)
    assert model.backbone.rope_embed.periods.dtype == torch.bfloat16
    assert model.backbone.rope_embed.periods.shape == (16,)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize(
    ("size", "width", "depth", "heads", "head_dim", "gqa", "kv"),
    [
        ("0.1b", 768, 12, 12, 64, set(), 12),
        ("0.4b", 1024, 24, 16, 64, set(range(8, 16)), 8),
        ("0.8b", 1280, 32, 16, 80, set(range(8, 24)), 8),
        ("1b", 1536, 40, 24, 64, set(range(8, 32)), 12),
        ("5b", 2432, 56, 32, 76, set(range(8, 48)), 16),
        ("tiny", 64, 4, 4, 16, {1, 2}, 2),
    ],
)
def test_arch_table(
    size: str, width: int, depth: int, heads: int, head_dim: int, gqa: set[int], kv: int
) -> None:
    arch = SAPIENS2_ARCHES[size]
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.head_dim) == (
        width,
        depth,
        heads,
        head_dim,
    )
    assert arch.ffn_dim == 4 * width
    assert set(arch.gqa_layers) == gqa
    assert [arch.kv_heads_of(i) for i in range(depth)] == [
        kv if i in gqa else heads for i in range(depth)
    ]
    assert arch.tokenizer_layers == 0


def test_4k_variants_add_only_a_tokenizer() -> None:
    for base, big, layers in (("1b", "1b-4k", 4), ("tiny", "tiny-4k", 1)):
        a, b = SAPIENS2_ARCHES[base], SAPIENS2_ARCHES[big]
        assert (b.tokenizer_layers, b.window) == (layers, 4)
        assert (a.embed_dim, a.depth, a.gqa_layers, a.kv_heads) == (
            b.embed_dim,
            b.depth,
            b.gqa_layers,
            b.kv_heads,
        )


@pytest.mark.parametrize(
    ("size", "cells"),
    [((1024, 768), 48), ((256, 192), 4), ((512, 384), 12), ((1040, 784), 9 * 7), ((16, 16), 1)],
)
def test_pointmap_scale_cells_ceil_halve_the_grid_three_times(
    size: tuple[int, int], cells: int
) -> None:
    assert pointmap_scale_cells(size) == cells


def test_pointmap_scale_mlp_is_sized_from_the_input_size() -> None:
    released = build_model(["pointmap"], "0.4b", family="sapiens2", device="meta")
    assert released.heads["pointmap"].scale_final_layer[1].in_features == 128 * 48
    small = build_model(
        ["pointmap"], "0.4b", family="sapiens2", device="meta", input_size=(512, 384)
    )
    assert small.heads["pointmap"].scale_final_layer[1].in_features == 128 * 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tasks": ["depth"], "size": "tiny"}, "no \\['depth'\\] head"),
        ({"tasks": ["pose"], "size": "0.1b"}, "no Sapiens2 pose head is defined for size '0.1b'"),
        ({"tasks": ["seg"], "size": "1b-4k"}, "no Sapiens2 seg head"),
        ({"tasks": [], "size": "0.3b"}, "unknown Sapiens2 size"),
        ({"tasks": ["pose"], "size": "tiny", "backbone_task": "pose"}, "backbone_task"),
        ({"tasks": [], "size": "tiny", "family": "sapiens3"}, "unknown model family"),
    ],
)
def test_build_model_validation(kwargs: dict, match: str) -> None:
    kwargs = {"family": "sapiens2", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_model(device="meta", **kwargs)


def test_input_size_is_a_sapiens2_option() -> None:
    with pytest.raises(ValueError, match="Sapiens2 models only"):
        build_model(["pose"], "tiny", input_size=(256, 192))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": 64, "depth": 2, "num_heads": 3}, "multiple of 4"),
        ({"embed_dim": 72, "depth": 2, "num_heads": 4}, "multiple of 4"),
        (
            {
                "embed_dim": 64,
                "depth": 2,
                "num_heads": 4,
                "gqa_layers": frozenset({1}),
                "kv_heads": 3,
            },
            "kv_heads must divide",
        ),
        (
            {
                "embed_dim": 64,
                "depth": 2,
                "num_heads": 4,
                "gqa_layers": frozenset({2}),
                "kv_heads": 2,
            },
            "gqa_layers must lie",
        ),
    ],
)
def test_arch_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sapiens2Arch(**kwargs)


def test_head_spec_options() -> None:
    assert head_spec2("pose", "tiny", num_keypoints=17).out_dim == 17
    assert head_spec2("seg", "tiny-4k").out_dim == 29
    with pytest.raises(ValueError, match="num_keypoints must be >= 1"):
        head_spec2("pose", "tiny", num_keypoints=0)
    assert head_spec2("pointmap", "tiny", scale_cells=6).scale_in_features == 8 * 6
