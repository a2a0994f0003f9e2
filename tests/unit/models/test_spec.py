"""Architecture shapes: parameter counts equal the published table exactly (SPEC §1.5)."""

from __future__ import annotations

import pytest
import torch

from models import build_model
from models.spec import BackboneSpec, backbone_spec, head_spec

# (size, backbone@finetune, backbone@pretrain, pose308, seg28, depth, normal)
TABLE = [
    ("0.3b", 306_244_608, 307_295_232, 23_438_132, 33_250_588, 13_665_409, 33_231_363),
    ("0.6b", 634_597_120, 635_910_400, 26_583_860, 36_396_316, 15_238_273, 36_377_091),
    ("1b", 1_139_163_648, 1_140_739_584, 29_729_588, 39_542_044, 16_811_137, 39_522_819),
    ("2b", 2_131_943_040, 2_133_912_960, 34_448_180, 44_260_636, 19_170_433, 44_241_411),
]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("size", "bb", "bb_pre", "pose", "seg", "depth", "normal"), TABLE)
def test_parameter_counts_match_the_paper_table(
    size: str, bb: int, bb_pre: int, pose: int, seg: int, depth: int, normal: int
) -> None:
    for task, head in (("pose", pose), ("seg", seg), ("depth", depth), ("normal", normal)):
        model = build_model([task], size, device="meta")  # no memory, even for 2B
        assert _count(model.backbone) == bb, (size, task)
        assert _count(model.heads[task]) == head, (size, task)
    assert _count(build_model([], size, device="meta")) == bb_pre


@pytest.mark.parametrize(("k", "delta"), [(133, 175 * 769), (17, 291 * 769)])
def test_smaller_keypoint_sets_shrink_only_the_final_layer(k: int, delta: int) -> None:
    full = _count(build_model(["pose"], "0.3b", device="meta").heads["pose"])
    small = _count(build_model(["pose"], "0.3b", device="meta", num_keypoints=k).heads["pose"])
    assert full - small == delta


@pytest.mark.parametrize(
    ("task", "padding", "cls", "grid"),
    [
        ("pose", 2, False, (64, 48)),
        ("normal", 2, False, (64, 48)),
        ("seg", 0, False, (64, 48)),
        ("depth", 0, False, (64, 48)),
        ("pretrain", 0, True, (64, 64)),
    ],
)
def test_task_family_backbone_variants(task: str, padding: int, cls: bool, grid: tuple) -> None:
    spec = backbone_spec(task, "0.3b")
    assert (spec.patch_padding, spec.with_cls_token, spec.grid) == (padding, cls, grid)


def test_padding_two_keeps_the_64_by_48_grid() -> None:
    model = build_model(["pose"], "tiny")
    with torch.no_grad():
        out = model.backbone(torch.zeros(1, 3, 1024, 768))
    assert out.shape == (1, 64, 64, 48)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": "3b"}, "unknown backbone size"),
        ({"size": "tiny", "img_size": (1000, 768)}, "multiple of 16"),
    ],
)
def test_backbone_spec_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BackboneSpec(**kwargs)


def test_head_spec_validation() -> None:
    with pytest.raises(ValueError, match="num_keypoints must be one of"):
        head_spec("pose", "0.3b", num_keypoints=21)
    with pytest.raises(ValueError, match="has no head"):
        head_spec("pretrain", "0.3b")
