"""The tiny Sapiens2 model end to end: output shapes per task, family plumbing, metadata."""

from __future__ import annotations

import pytest
import torch

from models import (
    FAMILIES,
    LICENCES,
    SAPIENS2_SEG_29,
    build_model,
    licence,
    sapiens2_tiny,
    sapiens2_tiny_4k,
    seg_classes,
)
from models.metadata import GOLIATH_SEG_28

H, W = 256, 192


def _image(b: int = 2, h: int = H, w: int = W) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("task", "shapes"),
    [
        ("pose", {"pose": (2, 308, H // 4, W // 4)}),
        ("seg", {"seg": (2, 29, H, W)}),
        ("normal", {"normal": (2, 3, H, W)}),
        ("pointmap", {"pointmap": (2, 3, H, W), "pointmap_scale": (2, 1)}),
        (None, {"features": (2, 64, H // 16, W // 16)}),
    ],
)
def test_tiny_forward_shapes(task: str | None, shapes: dict) -> None:
    model = build_model([task] if task else [], "tiny", family="sapiens2", input_size=(H, W)).eval()
    with torch.no_grad():
        out = model(_image())
    assert {k: tuple(v.shape) for k, v in out.items()} == shapes
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


def test_one_backbone_pass_serves_every_head_and_tasks_filters() -> None:
    model = build_model(["pose", "pointmap"], "tiny", family="sapiens2", input_size=(H, W)).eval()
    with torch.no_grad():
        both = model(_image())
        only = model(_image(), tasks=["pointmap"])
    assert list(both) == ["pose", "pointmap", "pointmap_scale"]
    assert list(only) == ["pointmap", "pointmap_scale"]
    assert torch.equal(only["pointmap_scale"], both["pointmap_scale"])


def test_the_pointmap_scale_branch_needs_its_grid() -> None:
    model = build_model(["pointmap"], "tiny", family="sapiens2").eval()  # sized for 1024x768
    with pytest.raises(ValueError, match="built for 48 cells, but a 16x12 feature grid"):
        model(_image())


def test_patch_conv_floors_and_has_no_padding() -> None:
    backbone = sapiens2_tiny().eval()
    assert backbone.patch_embed.proj.padding == (0, 0)
    with torch.no_grad():
        assert backbone(_image(1, 250, 190)).shape == (1, 64, 15, 11)
        trimmed = backbone(_image(1, 250, 190)[..., :240, :176])
        assert torch.equal(backbone(_image(1, 250, 190)), trimmed)


def test_features_are_the_patch_tokens_in_row_major_order() -> None:
    """With every residual branch zeroed the blocks pass tokens through, so the feature map is
    the final norm of the patch embedding: prefix tokens dropped, (h, w) row-major."""
    backbone = sapiens2_tiny().eval()
    for block in backbone.blocks:
        for linear in (block.attn.proj, block.ffn.w3):
            torch.nn.init.zeros_(linear.weight)
            torch.nn.init.zeros_(linear.bias)
    x = _image(1)
    with torch.no_grad():
        tokens, (h, w) = backbone.patch_embed(x)
        expected = backbone.ln1(tokens.contiguous()).reshape(1, h, w, 64).permute(0, 3, 1, 2)
        assert torch.equal(backbone(x), expected)


def test_4k_tokenizer_reduces_the_grid_fourfold() -> None:
    backbone = sapiens2_tiny_4k().eval()
    assert (backbone.embed_dim, backbone.spec.size, backbone.spec.family) == (
        64,
        "tiny-4k",
        "sapiens2",
    )
    with torch.no_grad():
        assert backbone(_image(1)).shape == (1, 64, 4, 3)
    with pytest.raises(ValueError, match="divisible by 4"):
        backbone(_image(1, 256, 160))


def test_samples_do_not_interact() -> None:
    model = build_model(["seg"], "tiny", family="sapiens2").eval()
    x = _image(3)
    with torch.no_grad():
        together = model(x)["seg"]
        alone = model(x[1:2])["seg"]
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


def test_v1_models_report_their_family() -> None:
    assert FAMILIES == ("sapiens", "sapiens2")
    assert build_model(["pose"], "tiny", device="meta").family == "sapiens"
    assert build_model([], "tiny", family="sapiens2", device="meta").family == "sapiens2"


def test_sapiens2_seg_classes_insert_eyeglass_at_2() -> None:
    classes = seg_classes("sapiens2")
    assert classes is SAPIENS2_SEG_29
    assert classes.num_classes == 29
    assert (classes.names[2], classes.palette[2]) == ("Eyeglass", (14, 204, 182))
    assert classes.names[:2] + classes.names[3:] == GOLIATH_SEG_28.names
    assert classes.palette[:2] + classes.palette[3:] == GOLIATH_SEG_28.palette
    assert classes.palette[28] == (82, 21, 114)
    assert classes.flip_pairs == tuple((k, k + 9) for k in range(5, 13))
    assert seg_classes("sapiens") is GOLIATH_SEG_28
    with pytest.raises(ValueError, match="unknown model family"):
        seg_classes("sapiens3")


def test_licences() -> None:
    assert set(LICENCES) == set(FAMILIES)
    assert licence("sapiens") == ("CC-BY-NC-4.0", "non-commercial use only")
    name, summary = licence("sapiens2")
    assert name == "Sapiens2 License"
    for term in ("surveillance", "biometric", "re-identifying", "deepfakes", "consent"):
        assert term in summary
    with pytest.raises(ValueError, match="unknown model family"):
        licence("other")
