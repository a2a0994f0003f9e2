"""Host <-> device copies: plain copies off CUDA; on CUDA pinned memory and a copy stream."""

from __future__ import annotations

import pytest
import torch

from models.transfer import to_device, to_host


def test_off_cuda_they_are_plain_copies() -> None:
    x = torch.arange(24, dtype=torch.uint8).view(2, 3, 4).permute(0, 2, 1)
    assert torch.equal(to_device(x, torch.device("cpu")), x)
    assert torch.equal(to_host(x), x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_copies_are_ordered_with_the_compute_stream() -> None:
    device = torch.device("cuda")
    frames = torch.randint(0, 255, (4, 3, 1080, 1920), dtype=torch.uint8)
    up = to_device(frames.permute(0, 2, 3, 1), device)  # a strided view, as the actor passes
    assert up.is_cuda and torch.equal(up.cpu(), frames.permute(0, 2, 3, 1))
    big = torch.randn(4096, 4096, device=device)
    result = (big @ big).sum(dim=0)  # queued on the compute stream
    down = to_host(result)
    assert down.is_pinned() and torch.equal(down, result.cpu())
