"""The fixed-batch predictor: padding never changes outputs; bf16 stays close to fp32."""

from __future__ import annotations

import copy

import pytest
import torch

from models import build_model
from models.runtime import Predictor, RuntimeSpec


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(["pose", "depth"], "tiny")


def test_padded_batches_equal_one_by_one(model: torch.nn.Module) -> None:
    x = torch.randn(5, 3, 128, 96)
    padded = Predictor(model, RuntimeSpec(batch_size=4))(x)  # 4 + (1 real + 3 zero rows)
    single = Predictor(model, RuntimeSpec(batch_size=1))(x)
    for task in ("pose", "depth"):
        assert padded[task].shape[0] == 5
        assert torch.allclose(padded[task], single[task], atol=1e-5)


def test_bfloat16_path_is_close_to_float32(model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 128, 96)
    ref = Predictor(copy.deepcopy(model), RuntimeSpec(dtype="float32"))(x)
    low = Predictor(copy.deepcopy(model), RuntimeSpec(dtype="bfloat16"))(x)
    for task in ("pose", "depth"):
        assert low[task].dtype == torch.bfloat16  # outputs stay in the model's dtype
        err = (low[task].float() - ref[task]).abs().max() / ref[task].abs().max()
        assert err < 0.05, (task, float(err))


def test_empty_and_bad_inputs(model: torch.nn.Module) -> None:
    pred = Predictor(model, RuntimeSpec(batch_size=2))
    assert pred(torch.zeros(0, 3, 64, 48)) == {}
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, C, H, W\)"):
        pred(torch.zeros(3, 64, 48))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RuntimeSpec(batch_size=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        RuntimeSpec(dtype="int8")


def test_compiled_predictor_equals_eager_on_cpu(model: torch.nn.Module) -> None:
    """``torch.compile`` (inductor on the CPU; CUDA graphs are measured by bench/gpu.sh)."""
    x = torch.randn(3, 3, 128, 96)
    eager = Predictor(model, RuntimeSpec(batch_size=2))(x)
    compiled = Predictor(model, RuntimeSpec(batch_size=2, compile="default"))
    assert compiled._forward is not compiled.model  # really wrapped
    out = compiled(x)
    for task, want in eager.items():
        torch.testing.assert_close(out[task], want, rtol=1e-4, atol=1e-4)


def test_channels_last_equals_contiguous(model: torch.nn.Module) -> None:
    x = torch.randn(2, 3, 128, 96)
    ref = Predictor(copy.deepcopy(model), RuntimeSpec(batch_size=2))(x)
    cl = Predictor(copy.deepcopy(model), RuntimeSpec(batch_size=2, channels_last=True))
    convs = [m for m in cl.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    out = cl(x)
    for task, want in ref.items():
        torch.testing.assert_close(out[task], want, rtol=1e-4, atol=1e-4)
