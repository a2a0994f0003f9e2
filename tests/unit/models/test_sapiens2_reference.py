"""Sapiens2 checkpoints loaded by ``models.load_checkpoint`` against the independent functional
reference of ``sapiens2_reference.py`` (written from SPEC-sapiens2.md only).

Random official-layout state dicts (SPEC §5.2) are written as safetensors files; the loaded model
and the reference must agree within ``TOL`` relative to the reference's largest magnitude. The
first tests check the reference itself against facts the spec states (no implementation needed).

Cost: one 0.4b backbone (395 M parameters) is generated once and shared by every file; the
reference backbone runs once on the shared images; each task file is loaded and run once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import load_checkpoint
from tests.unit.models import sapiens2_reference as ref

TOL = 1e-4  # max|Δ| <= TOL * max|reference|
SIZE = "0.4b"
B, H, W = 1, 192, 144
# 192x144: grid 12x9 -> 6x5 -> 3x3 -> 2x2 after the three stride-2 1x1 convs (SPEC §3.4).
SCALE_CELLS = 4
HEAD_SEEDS = {"pose": 11, "seg": 12, "normal": 13, "pointmap": 14}
OUT_SHAPES = {
    "pose": {"pose": (B, 308, H // 4, W // 4)},
    "seg": {"seg": (B, 29, H, W)},
    "normal": {"normal": (B, 3, H, W)},
    "pointmap": {"pointmap": (B, 3, H, W), "pointmap_scale": (B, 1)},
    "pretrain": {"features": (B, 1024, H // 16, W // 16)},
}

Outputs = dict[str, torch.Tensor]


def _image(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _diff(got: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, bool]:
    assert got.shape == expected.shape, (tuple(got.shape), tuple(expected.shape))
    assert got.dtype == torch.float32, got.dtype
    d = (got - expected).abs().max().item()
    return d, expected.abs().max().item(), torch.equal(got, expected)


def _check(name: str, got: Outputs, expected: Outputs) -> None:
    """Every reference output within tolerance; prints the max diffs (run with -s to see)."""
    missing = set(expected) - set(got)
    assert not missing, f"{name}: outputs missing: {sorted(missing)} (got {sorted(got)})"
    bad = []
    for key, exp in expected.items():
        d, m, same = _diff(got[key], exp)
        print(
            f"[sapiens2-ref] {name}/{key}: max|Δ|={d:.3e} max|ref|={m:.3e} "
            f"rel={d / m:.3e} bitwise={same}"
        )
        if not d <= TOL * m:
            bad.append(f"{key}: max|Δ| {d:.3e} > {TOL} * {m:.3e}")
    assert not bad, f"{name}: " + "; ".join(bad)


def _run_file(sd: ref.State, path: Path, *inputs: torch.Tensor) -> list[Outputs]:
    """Write ``sd`` as a safetensors file, load it with the code under test, run it on each
    input; the file is removed afterwards (0.4b files are 1.6-2.1 GB)."""
    save_file(sd, str(path))
    try:
        model = load_checkpoint(path)
        assert not model.training
        with torch.no_grad():
            return [dict(model(x)) for x in inputs]
    finally:
        path.unlink()


# --------------------------------------------------------------------------------------------
# The reference against the spec's stated facts (no implementation involved)


# SPEC §2.4 [run] lists.
# fmt: off
_SPEC_PERIODS = {
    64: [1, 1.3359375, 1.78125, 2.375, 3.15625, 4.21875, 5.625, 7.5, 10, 13.3125, 17.75, 23.75,
         31.625, 42.25, 56.25, 75],
    80: [1, 1.2578125, 1.5859375, 2.0, 2.515625, 3.15625, 4.0, 5, 6.3125, 7.90625, 10, 12.625,
         15.9375, 19.75, 25.0, 31.625, 40.0, 50.5, 62.75, 79.0],
    76: [1, 1.2734375, 1.625, 2.078125, 2.640625, 3.375, 4.28125, 5.46875, 6.96875, 8.875,
         11.3125, 14.3125, 18.375, 23.25, 30.0, 37.75, 48.75, 61.5, 79.0],
}
# fmt: on


@pytest.mark.parametrize(("hd", "expected"), list(_SPEC_PERIODS.items()))
def test_reference_rope_periods_match_spec(hd: int, expected: list[float]) -> None:
    """SPEC §2.4: the bf16 periods, including the entries that differ from bf16(fp32)."""
    periods = ref.rope_periods(hd, torch.bfloat16)
    assert periods.dtype == torch.bfloat16
    assert periods.float().tolist() == expected
    if hd != 64:  # §2.4: for hd 80 and 76 the bf16 path differs from rounding fp32 periods
        assert not torch.equal(periods, ref.rope_periods(hd, torch.float32).bfloat16())


# SPEC §1.2 (parameters) and §5.2 (keys, 1b-4k from §2.6).
# fmt: off
_BACKBONE = {"0.1b": (113_993_472, 210), "0.4b": (395_450_368, 414), "0.8b": (814_283_520, 550),
             "1b": (1_455_474_176, 686), "1b-4k": (1_606_588_928, 744),
             "5b": (5_066_902_976, 958)}
_HEADS = {
    "0.4b": {"pose": (30_226_996, 424), "seg": (11_151_325, 424), "normal": (57_907_363, 432),
             "pointmap": (133_224_996, 444)},
    "0.8b": {"pose": (34_421_300, 560), "seg": (13_248_477, 560), "normal": (70_293_923, 568),
             "pointmap": (153_082_660, 580)},
    "1b": {"pose": (64_305_972, 696), "seg": (15_345_629, 696), "normal": (83_860_131, 704),
           "pointmap": (174_119_972, 716)},
    "5b": {"pose": (53_295_668, 968), "seg": (22_685_661, 968), "normal": (249_455_299, 976),
           "pointmap": (281_442_884, 988)},
}
# fmt: on


def test_reference_shapes_match_spec_counts() -> None:
    for size, (params, keys) in _BACKBONE.items():
        shapes = ref.backbone_shapes(size)
        assert (ref.n_params(shapes), len(shapes)) == (params, keys), size
    tok = {k: s for k, s in ref.backbone_shapes("1b-4k").items() if k.startswith("tokenizer.")}
    assert (ref.n_params(tok), len(tok)) == (151_114_752, 58)
    for size, heads in _HEADS.items():
        n_backbone = len(ref.backbone_shapes(size))
        for task, (params, keys) in heads.items():
            shapes = ref.head_shapes(task, size)
            assert (ref.n_params(shapes), n_backbone + len(shapes)) == (params, keys), (size, task)
    # The tiny 4K test model: 4 blocks (1, 2 GQA with 2 KV heads), 1 tokenizer layer.
    c = 64
    tiny = ref.backbone_shapes("tiny-4k")
    assert tiny["blocks.1.attn.wk.weight"] == (32, c)
    assert tiny["blocks.0.attn.wk.weight"] == (c, c)
    assert tiny["blocks.3.attn.wv.weight"] == (c, c)
    assert tiny["tokenizer.local_pos_embed"] == (1, 17, c)
    tok = {k: s for k, s in tiny.items() if k.startswith("tokenizer.")}
    assert ref.n_params(tok) == 16 * c * c + 15 * c + 17 * c + c


def test_reference_rope_tables_layout() -> None:
    """SPEC §2.4: coordinates (i + 0.5)/n * 2 - 1 per axis, row-major tokens, dims
    [row angles | col angles] tiled twice."""
    periods = ref.rope_periods(64)
    h, w = 3, 2
    sin, cos = ref.rope_tables(h, w, periods, torch.bfloat16)
    assert sin.shape == cos.shape == (h * w, 64) and sin.dtype == torch.bfloat16
    p = periods.double()
    for n in range(h * w):
        y, x = 2 * ((n // w + 0.5) / h) - 1, 2 * ((n % w + 0.5) / w) - 1
        angles = torch.cat((2 * torch.pi * y / p, 2 * torch.pi * x / p)).tile(2)
        assert torch.allclose(sin[n].double(), angles.sin(), atol=0.02), n
        assert torch.allclose(cos[n].double(), angles.cos(), atol=0.02), n


# --------------------------------------------------------------------------------------------
# 0.4b at 192x144, batch 1: every task and the pretrain featmap


@pytest.fixture(scope="module")
def backbone() -> ref.State:
    return ref.make_backbone(SIZE, seed=0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _image(B, H, W, seed=1)


@pytest.fixture(scope="module")
def ref_features(backbone: ref.State, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref.backbone_forward(backbone, images)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sapiens2")


def _head(task: str) -> ref.State:
    """The random 0.4b head of a task (regenerated on demand rather than kept: 0.05-0.5 GB)."""
    return ref.make_head(task, SIZE, HEAD_SEEDS[task], scale_cells=SCALE_CELLS)


@pytest.fixture(scope="module")
def task_runs(
    backbone: ref.State,
    images: torch.Tensor,
    ref_features: torch.Tensor,
    workdir: Path,
) -> Iterator[Callable[[str], tuple[Outputs, Outputs]]]:
    """task -> (implementation outputs, reference outputs), each computed once."""
    cache: dict[str, tuple[Outputs, Outputs]] = {}

    def get(task: str) -> tuple[Outputs, Outputs]:
        if task not in cache:
            head = _head(task)
            (got,) = _run_file(
                ref.task_state_dict(backbone, head), workdir / f"{task}.safetensors", images
            )
            with torch.no_grad():
                cache[task] = (got, ref.head_forward(task, head, ref_features))
        return cache[task]

    yield get
    cache.clear()


@pytest.fixture(scope="module")
def pretrain_model(backbone: ref.State, workdir: Path) -> Iterator[torch.nn.Module]:
    """The 0.4b pretrain file (bare backbone keys) loaded by the code under test."""
    path = workdir / "pretrain.safetensors"
    save_file(backbone, str(path))
    try:
        model = load_checkpoint(path)
    finally:
        path.unlink()
    assert not model.training
    yield model
    del model


@pytest.mark.parametrize("task", ["pose", "seg", "normal", "pointmap"])
def test_task_file_matches_reference(
    task: str, task_runs: Callable[[str], tuple[Outputs, Outputs]]
) -> None:
    got, expected = task_runs(task)
    assert {k: tuple(v.shape) for k, v in expected.items()} == OUT_SHAPES[task]
    _check(f"{SIZE} {task}", got, expected)


def test_pretrain_featmap_matches_reference(
    pretrain_model: torch.nn.Module, images: torch.Tensor, ref_features: torch.Tensor
) -> None:
    with torch.no_grad():
        got = dict(pretrain_model(images))
    assert tuple(ref_features.shape) == OUT_SHAPES["pretrain"]["features"]
    _check(f"{SIZE} pretrain", got, {"features": ref_features})


def test_fp32_rope_variant_is_caught(
    task_runs: Callable[[str], tuple[Outputs, Outputs]],
    backbone: ref.State,
    images: torch.Tensor,
) -> None:
    """SPEC §2.4 / trap 1: an all-fp32 RoPE moves the pose heatmaps far beyond the tolerance
    (the spec measured 8.7e-3 at 256x192 on its random weights), while the bf16 reference
    matches."""
    got, expected = task_runs("pose")
    with torch.no_grad():
        f32 = ref.backbone_forward(
            backbone,
            images,
            rope_dtype=torch.float32,
            periods=ref.rope_periods(ref.ARCHES[SIZE].head_dim, torch.float32),
        )
        variant = ref.head_forward("pose", _head("pose"), f32)["pose"]
    d_ref, m, _ = _diff(got["pose"], expected["pose"])
    d_var, _, _ = _diff(got["pose"], variant)
    d_vr = (variant - expected["pose"]).abs().max().item()
    print(
        f"[sapiens2-ref] fp32-RoPE variant: impl vs variant max|Δ|={d_var:.3e}, "
        f"bf16 ref vs variant {d_vr:.3e}, impl vs bf16 ref {d_ref:.3e}, max|ref|={m:.3e}"
    )
    assert d_ref <= TOL * m
    assert d_var > 10 * TOL * m, "an fp32 RoPE would pass: the test cannot see trap 1"


SMALL = (1, 64, 48)  # small-input tests: grid 4x3, 21 tokens (a 0.4b pass costs 2*395M*tokens)


def test_tiled_gqa_variant_is_caught(pretrain_model: torch.nn.Module, backbone: ref.State) -> None:
    """SPEC §2.3 step 5 / trap 5: a tiled ``repeat`` of the KV heads instead of
    ``repeat_interleave`` is far outside the tolerance; the official order matches."""
    x = _image(*SMALL, seed=3)
    with torch.no_grad():
        got = pretrain_model(x)["features"]
        good = ref.backbone_forward(backbone, x)
        tiled = ref.backbone_forward(backbone, x, gqa_expand="tile")
    d_good, m, _ = _diff(got, good)
    d_tiled, _, _ = _diff(got, tiled)
    print(
        f"[sapiens2-ref] tiled-GQA variant: impl vs variant max|Δ|={d_tiled:.3e}, "
        f"impl vs ref {d_good:.3e}, max|ref|={m:.3e}"
    )
    assert d_good <= TOL * m
    assert d_tiled > 10 * TOL * m


def test_input_size_not_multiple_of_16_is_floored(
    pretrain_model: torch.nn.Module, backbone: ref.State
) -> None:
    """SPEC §2.2: patch conv padding 0, extra rows/columns dropped (79x61 -> grid 4x3)."""
    x = _image(1, 79, 61, seed=4)
    with torch.no_grad():
        got = dict(pretrain_model(x))
        expected = ref.backbone_forward(backbone, x)
    assert tuple(expected.shape) == (1, 1024, 4, 3)
    _check(f"{SIZE} pretrain 79x61", got, {"features": expected})


@pytest.mark.parametrize(("size", "stored"), [("tiny-4k", torch.bfloat16), (SIZE, torch.float32)])
def test_periods_from_file_are_used(
    size: str, stored: torch.dtype, backbone: ref.State, workdir: Path
) -> None:
    """SPEC §2.4 / trap 2: ``rope_embed.periods`` is taken from the file. Stored fp32 periods are
    cast into the bf16 buffer (§5.2, trap 18): the fp32 values here carry bits bf16 lacks."""
    hd = ref.ARCHES[size].head_dim
    periods = (ref.rope_periods(hd, torch.float32) * 1.37 + 0.011).to(stored)
    if stored == torch.float32:
        assert not torch.equal(periods, periods.bfloat16().float())
    default = backbone if size == SIZE else ref.make_backbone(size, seed=9)
    sd = dict(default)
    sd["rope_embed.periods"] = periods
    x = _image(*SMALL, seed=5) if size == SIZE else _image(2, 256, 256, seed=5)
    (got,) = _run_file(sd, workdir / "periods.safetensors", x)
    with torch.no_grad():
        expected = ref.backbone_forward(sd, x)  # rope_tables casts the periods to bf16
        unchanged = ref.backbone_forward(default, x)
    _check(f"{size} pretrain periods stored {stored}", got, {"features": expected})
    d, m, _ = _diff(got["features"], unchanged)
    print(f"[sapiens2-ref] {size}: output with modified periods vs default: max|Δ|={d:.3e}")
    assert d > 10 * TOL * m, "the periods of the file made no difference"


def test_bf16_file_matches_upcast_reference(backbone: ref.State, workdir: Path) -> None:
    """SPEC §5.2: a bf16-stored file is up-cast into the fp32 model (periods stay bf16)."""
    sd16 = {k: v.bfloat16() for k, v in backbone.items()}
    x = _image(*SMALL, seed=6)
    (got,) = _run_file(sd16, workdir / "bf16.safetensors", x)
    up = {k: (v if k == "rope_embed.periods" else v.float()) for k, v in sd16.items()}
    del sd16
    with torch.no_grad():
        expected = ref.backbone_forward(up, x)
    _check(f"{SIZE} pretrain bf16 file", got, {"features": expected})


# --------------------------------------------------------------------------------------------
# The 4K tokenizer (tiny test model)


@pytest.mark.parametrize(
    ("h", "w", "with_periods"), [(256, 256, True), (256, 192, True), (128, 192, False)]
)
def test_tiny_4k_tokenizer_featmap_matches_reference(
    h: int, w: int, with_periods: bool, tmp_path: Path
) -> None:
    """SPEC §2.6: 4x4 windows, [w_cls, 16 patches] + local_pos_embed, tokenizer blocks without
    QK-norm, LayerScale or RoPE; RoPE on the reduced grid. Without periods in the file they are
    computed the bf16 way (§5.2)."""
    sd = ref.make_backbone("tiny-4k", seed=7)
    if not with_periods:
        del sd["rope_embed.periods"]
    x = _image(2, h, w, seed=8)
    (got,) = _run_file(sd, tmp_path / "tiny4k.safetensors", x)
    with torch.no_grad():
        expected = ref.backbone_forward(sd, x)
    assert tuple(expected.shape) == (2, 64, h // 64, w // 64)
    _check(f"tiny-4k {h}x{w} periods={with_periods}", got, {"features": expected})
