"""Analyzer on a Sapiens2 group: depth served from the pointmap, pointmap patches with their
scales, bicubic crops, and whole-frame mode by the Sapiens2 demo recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import build_model
from models._frame_maps2 import letterbox, sapiens2_frame_outputs
from models.analyze import Analyzer
from models.preprocess import normalize
from models.runtime import Predictor, RuntimeSpec

CROP = (192, 144)  # the tiny Sapiens2 is built for it (its pointmap scale branch)
TASKS = ("pose", "seg", "depth", "normal", "pointmap")


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    torch.manual_seed(0)
    model = build_model(
        ("pose", "seg", "normal", "pointmap"), "tiny", family="sapiens2", input_size=CROP
    )
    return Analyzer([Predictor(model, RuntimeSpec(batch_size=2))], crop_size=CROP)


@pytest.fixture(scope="module")
def frames() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (2, 3, 120, 160), dtype=torch.uint8, generator=gen)
    boxes = torch.tensor([[10.0, 10, 60, 110], [70, 5, 150, 118], [5, 5, 30, 60]])
    return images, torch.tensor([0, 1, 1]), boxes, torch.tensor([0.9, 0.8, 0.7])


def test_depth_is_the_metric_z_of_the_pointmap(analyzer: Analyzer) -> None:
    assert analyzer.family == "sapiens2" and analyzer.enlarge_mode == "bicubic"
    assert analyzer.tasks == ("pose", "seg", "normal", "pointmap", "depth")
    images = torch.randn(3, 3, *CROP)
    out = analyzer.run_groups(images, frozenset({"depth"}))
    assert set(out) == {"depth"}  # the pointmap ran for it but is not handed out
    both = analyzer.run_groups(images, frozenset({"depth", "pointmap"}))
    assert set(both) == {"depth", "pointmap", "pointmap_scale"}
    expected = both["pointmap"][:, 2:3] / both["pointmap_scale"].view(-1, 1, 1, 1)
    torch.testing.assert_close(out["depth"], expected, rtol=0, atol=0)
    assert set(analyzer.run_groups(images, frozenset({"pose"}))) == {"pose"}


def test_crop_mode_gives_pointmap_patches_with_each_persons_scale(
    analyzer: Analyzer, frames: tuple[torch.Tensor, ...]
) -> None:
    res = analyzer(*frames, tasks=TASKS)
    p = res.patches
    assert p is not None and p.pointmap is not None and p.pointmap_scale is not None
    assert p.pointmap.dtype == np.float16 and p.pointmap_scale.shape == (3,)
    crops = analyzer.crop(frames[0], frames[1], frames[2]).crops
    raw = analyzer.run_groups(normalize(crops, analyzer.norm), frozenset({"pointmap"}))
    torch.testing.assert_close(
        torch.from_numpy(p.pointmap_scale), raw["pointmap_scale"].view(-1), rtol=0, atol=0
    )
    for k, (pm, depth) in enumerate(zip(p.split("pointmap"), p.split("depth"), strict=True)):
        # both are sampled at the same patch pixels: depth * its scale == z / pointmap scale
        z = torch.from_numpy(pm[..., 2].astype("float32")) / float(p.pointmap_scale[k])
        d = torch.from_numpy(depth.astype("float32")) * float(p.depth_scale[k])
        assert pm.shape[:2] == depth.shape
        torch.testing.assert_close(d, z, rtol=2e-3, atol=2e-3 * float(z.abs().max()))


def test_letterbox_truncates_and_centres_like_the_demo() -> None:
    frames = torch.full((1, 3, 1080, 1920), 200, dtype=torch.uint8)
    images, pad = letterbox(frames, (1024, 768))
    # s = min(768/1920, 1024/1080) = 0.4 -> 768 x 432, int() truncation; 296 rows above/below.
    assert pad == (0, 296, 768, 432)
    assert images.shape == (1, 3, 1024, 768)
    assert images[0, :, :296].abs().max() == 0 and images[0, :, 296 + 432 :].abs().max() == 0
    assert torch.allclose(images[0, :, 296:728], torch.tensor(200.0))
    odd, pad = letterbox(torch.zeros(1, 3, 100, 101, dtype=torch.uint8), (64, 48))
    assert pad == (0, 8, 48, 47) and odd.shape[-2:] == (64, 48)  # the odd row goes below


def test_whole_frame_recipe_crops_the_padding_and_divides_by_the_scale() -> None:
    """A model stand-in whose outputs are known functions of the input pixel position, so the
    crop of the letterbox padding, the scale division and the resize can be checked exactly."""
    calls: list[tuple[tuple[int, ...], frozenset[str]]] = []

    def run(images: torch.Tensor, want: frozenset[str]) -> dict[str, torch.Tensor]:
        calls.append((tuple(images.shape), want))
        n, _, h, w = images.shape
        ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(n, 1, h, w)
        out: dict[str, torch.Tensor] = {}
        if "seg" in want:
            out["seg"] = torch.cat((ys, -ys), dim=1)
        if "pointmap" in want:
            out["pointmap"] = torch.cat((ys, ys, ys + 1), dim=1) * 2.0
            out["pointmap_scale"] = torch.full((n, 1), 2.0)
        if "normal" in want:
            out["normal"] = torch.cat((ys, ys, ys), dim=1) + 1.0
        return out

    frames = torch.zeros(2, 3, 60, 160, dtype=torch.uint8)  # letterboxed into 64 x 48: 48 x 18
    out = sapiens2_frame_outputs(
        frames,
        run,
        lambda x: x,
        input_size=(64, 48),
        tasks=("seg", "depth", "normal", "pointmap"),
        out_size=(18, 48),
    )
    assert calls == [
        ((2, 3, 64, 48), frozenset({"seg"})),
        ((2, 3, 64, 48), frozenset({"pointmap", "normal"})),
    ]
    top = (64 - 18) // 2
    rows = torch.arange(top, top + 18, dtype=torch.float32)
    # same size after the crop: no resampling, and the scale division undoes the x2
    torch.testing.assert_close(out["pointmap"][0, 0, :, 0], rows)
    torch.testing.assert_close(out["depth"][0, 0, :, 0], rows + 1)
    unit = torch.ones(3) / 3**0.5
    torch.testing.assert_close(out["normal"][0, :, 5, 7], unit)
    assert out["seg"].shape == (2, 2, 18, 48)
    expected = F.interpolate(torch.arange(64.0).view(1, 1, 64, 1), size=(18, 1), mode="bilinear")
    torch.testing.assert_close(out["seg"][0, 0, :, 0], expected.view(18))


def test_frame_mode_gives_metric_pointmap_maps(
    analyzer: Analyzer, frames: tuple[torch.Tensor, ...]
) -> None:
    res = analyzer(
        *frames, tasks=("seg", "depth", "pointmap"), dense_mode="frame", out_size=(60, 80)
    )
    maps = res.maps
    assert maps is not None and maps.pointmap is not None and maps.depth is not None
    assert maps.pointmap.shape == (2, 60, 80, 3)
    on = maps.part > 0
    torch.testing.assert_close(maps.pointmap[..., 2][on], maps.depth[on])
    assert torch.isnan(maps.pointmap[~on]).all()
