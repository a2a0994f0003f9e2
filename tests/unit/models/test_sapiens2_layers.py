"""Sapiens2 layers: bf16 RoPE (SPEC §2.4), RMSNorm, GQA, SwiGLU and the 4K tokenizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.layers import (
    GroupedQueryAttention,
    RMSNorm,
    RopePositionEmbedding2d,
    SwiGLUFFN,
    WindowTokenizer,
    apply_rope,
    rope_periods,
)
from models.layers import grouped_attention as gqa_module
from models.layers.rope import rope_angles

# SPEC §2.4, measured on the official module.
PERIODS = {
    64: [1, 1.3359375, 1.78125, 2.375, 3.15625, 4.21875, 5.625, 7.5, 10, 13.3125, 17.75, 23.75,
         31.625, 42.25, 56.25, 75],
    80: [1, 1.2578125, 1.5859375, 2.0, 2.515625, 3.15625, 4.0, 5, 6.3125, 7.90625, 10, 12.625,
         15.9375, 19.75, 25.0, 31.625, 40.0, 50.5, 62.75, 79.0],
    76: [1, 1.2734375, 1.625, 2.078125, 2.640625, 3.375, 4.28125, 5.46875, 6.96875, 8.875,
         11.3125, 14.3125, 18.375, 23.25, 30.0, 37.75, 48.75, 61.5, 79.0],
}  # fmt: skip


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("head_dim", PERIODS)
def test_rope_periods_are_computed_the_bf16_way(head_dim: int) -> None:
    periods = rope_periods(head_dim)
    assert periods.dtype == torch.bfloat16
    assert periods.float().tolist() == PERIODS[head_dim]
    buffer = RopePositionEmbedding2d(head_dim, device="meta").periods
    assert (buffer.dtype, buffer.shape) == (torch.bfloat16, (head_dim // 4,))


def test_bf16_periods_differ_from_the_rounded_fp32_formula_at_head_dim_80() -> None:
    fp32 = (100.0 ** (torch.arange(0, 40, 2) / 40)).to(torch.bfloat16)
    assert fp32[3].item() == 1.9921875
    assert rope_periods(80)[3].item() == 2.0


def test_rope_angles_layout() -> None:
    """Row angles then column angles, tiled twice; coordinates 2 (i + 0.5) / n - 1."""
    periods = rope_periods(16)
    angles = rope_angles((2, 3), periods)
    assert (angles.shape, angles.dtype) == ((6, 16), torch.bfloat16)
    assert torch.equal(angles[:, :8], angles[:, 8:])
    rows, cols = angles[:, :4].reshape(2, 3, 4), angles[:, 4:8].reshape(2, 3, 4)
    assert torch.equal(rows, rows[:, :1].expand(-1, 3, -1))  # rows depend on r only
    assert torch.equal(cols, cols[:1].expand(2, -1, -1))  # columns on c only
    # period 1: angle = bf16(2 pi * coord); row 0 of 2 sits at -0.5, column 0 of 3 at -2/3.
    assert rows[0, 0, 0].item() == torch.tensor(-torch.pi, dtype=torch.bfloat16).item()
    col0 = torch.tensor(-2 / 3, dtype=torch.bfloat16) * (2 * torch.pi)
    assert cols[0, 0, 0].item() == col0.item()


def test_rotate_half_pairs_dim_j_with_j_plus_half() -> None:
    sin, cos = RopePositionEmbedding2d(16)((2, 2))
    x = torch.zeros(1, 1, 4, 16)
    x[..., 3] = 1.0  # dims 0-3 rotate with the row angle; dim 3 pairs with dim 3 + 8
    out = apply_rope(x, sin, cos)
    expected = torch.zeros(4, 16, dtype=torch.bfloat16)
    expected[:, 3], expected[:, 11] = cos[:, 3], sin[:, 3]
    assert torch.equal(out[0, 0], expected.float())


def test_prefix_tokens_are_rounded_to_bf16_but_not_rotated() -> None:
    sin, cos = RopePositionEmbedding2d(16)((2, 3))
    x = _randn(2, 4, 9 + 6, 16)
    out = apply_rope(x, sin, cos)
    assert out.dtype == torch.float32
    assert torch.equal(out[..., :9, :], x[..., :9, :].bfloat16().float())
    assert not torch.equal(out[..., 9:, :], x[..., 9:, :].bfloat16().float())
    assert torch.equal(out[..., 9:, :], apply_rope(x[..., 9:, :], sin, cos))


def test_rotation_rounds_every_op_to_bf16() -> None:
    """x * cos, rotate_half(x) * sin and their sum are each bf16 ops (no fp32 accumulation)."""
    sin, cos = RopePositionEmbedding2d(64)((8, 6))
    x = _randn(2, 3, 48, 64) * 4
    xb = x.bfloat16()
    products = (xb * cos, torch.cat((-xb[..., 32:], xb[..., :32]), dim=-1) * sin)
    assert torch.equal(apply_rope(x, sin, cos), (products[0] + products[1]).float())


def test_rope_tables_are_cached_and_reset_by_loading() -> None:
    rope = RopePositionEmbedding2d(16)
    first = rope((4, 3))
    assert rope((4, 3))[0] is first[0]
    rope.load_state_dict({"periods": rope.periods.float() * 2})
    assert rope.periods.dtype == torch.bfloat16
    assert not torch.equal(rope((4, 3))[0], first[0])
    assert torch.equal(rope((4, 3))[0], rope_angles((4, 3), rope.periods).sin())


@pytest.mark.parametrize("dim", [16, 64, 76, 1024, 2432])
def test_rms_norm_equals_torch_rms_norm_bitwise(dim: int) -> None:
    ours = RMSNorm(dim)
    ours.weight.data = _randn(dim, seed=1)
    ref = torch.nn.RMSNorm(dim, eps=1e-6)
    ref.weight.data = ours.weight.data.clone()
    x = _randn(2, 37, dim) * 3
    assert torch.equal(ours(x), ref(x))
    assert ours.eps == 1e-6


def test_native_gqa_equals_repeat_interleave_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    attn = GroupedQueryAttention(64, 4, num_kv_heads=2).eval()
    for p in attn.parameters():
        p.data = _randn(*p.shape, seed=p.numel()) * 0.3
    sin, cos = RopePositionEmbedding2d(16)((4, 3))
    x = _randn(2, 9 + 12, 64)
    with torch.no_grad():
        native = attn(x, (sin, cos))
        monkeypatch.setattr(gqa_module, "_NATIVE_GQA_DEVICES", frozenset())
        expanded = attn(x, (sin, cos))
    assert torch.equal(native, expanded)
    assert attn.wk.weight.shape == (32, 64)


def test_gqa_kv_head_j_serves_query_heads_jg_to_jg_plus_g_minus_1() -> None:
    """With v = one-hot per KV head, each query head's output names the KV head it read."""
    attn = GroupedQueryAttention(16, 4, num_kv_heads=2, qk_norm=False, layer_scale=None)
    attn.wv.weight.data.zero_()
    attn.wv.bias.data = torch.tensor([1.0, 0, 0, 0, 2.0, 0, 0, 0])  # KV head 0 -> 1, 1 -> 2
    attn.proj.weight.data = torch.eye(16)
    attn.proj.bias.data.zero_()
    with torch.no_grad():
        out = attn(_randn(1, 5, 16))
    expected = torch.tensor([1.0, 1.0, 2.0, 2.0]).expand(5, 4)  # tiled would be [1, 2, 1, 2]
    torch.testing.assert_close(out[0, :, ::4], expected)


def test_layer_scale_only_on_the_attention_branch() -> None:
    attn = GroupedQueryAttention(64, 4)
    assert attn.gamma is not None
    assert torch.all(attn.gamma.weight == 1e-4)
    keys = set(GroupedQueryAttention(64, 4, qk_norm=False, layer_scale=None).state_dict())
    assert keys == {f"{n}.{p}" for n in ("wq", "wk", "wv", "proj") for p in ("weight", "bias")}


def test_swiglu_first_half_feeds_silu_second_half_gates() -> None:
    ffn = SwiGLUFFN(4, 3)
    x = _randn(2, 4)
    with torch.no_grad():
        u = F.linear(x, ffn.w12.weight[:3], ffn.w12.bias[:3])
        g = F.linear(x, ffn.w12.weight[3:], ffn.w12.bias[3:])
        torch.testing.assert_close(ffn(x), ffn.w3(F.silu(u) * g))
        assert not torch.allclose(ffn(x), ffn.w3(F.silu(g) * u))
    assert ffn.w12.weight.shape == (6, 4)


def test_tokenizer_chunking_does_not_change_the_result() -> None:
    tok = WindowTokenizer(64, 4, 1, ffn_dim=256).eval()
    tok.reset_parameters()
    x = _randn(2, 8 * 12, 64)
    with torch.no_grad():
        whole, grid = tok(x, (8, 12))
        tok.chunk_size = 5
        chunked, _ = tok(x, (8, 12))
    assert grid == (2, 3)
    assert whole.shape == (2, 6, 64)
    assert torch.equal(whole, chunked)


def test_tokenizer_windows_are_row_major_blocks() -> None:
    """A window's output depends only on its own 4x4 patch block."""
    tok = WindowTokenizer(64, 4, 1, ffn_dim=256).eval()
    tok.reset_parameters()
    x = _randn(1, 8 * 8, 64)
    y = x.clone().reshape(1, 8, 8, 64)
    y[:, 4:, 4:] += 1.0  # only the bottom-right window (index 3) changes
    with torch.no_grad():
        a, _ = tok(x, (8, 8))
        b, _ = tok(y.reshape(1, 64, 64), (8, 8))
    changed = [not torch.equal(a[0, i], b[0, i]) for i in range(4)]
    assert changed == [False, False, False, True]


def test_tokenizer_needs_a_grid_divisible_by_the_window() -> None:
    tok = WindowTokenizer(64, 4, 1, ffn_dim=256)
    with pytest.raises(ValueError, match="divisible by 4, got 6x8"):
        tok(torch.zeros(1, 48, 64), (6, 8))
