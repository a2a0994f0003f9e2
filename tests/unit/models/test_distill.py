"""Distillation losses (zero at the teacher, in task units), the agreement metrics (PCK@0.05 of
the crop diagonal, mIoU, errors), and which parameters a run trains."""

from __future__ import annotations

import math

import pytest
import torch

from models._distill import (
    agreement,
    distill_loss,
    evaluate,
    task_loss,
    teacher_outputs,
    trainable_parameters,
)
from models._trunk_analyze import shared_state
from models._trunk_run import shared_key
from models.sapiens import SapiensModel
from models.trunk import build_trunk
from tests.unit.models.test_trunk import CROP, TASKS, teachers  # noqa: F401  (fixture)

G = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal"])
def test_losses_are_zero_at_the_teacher_and_positive_elsewhere(task: str) -> None:
    ref = {task: _rand(2, 3, 8, 6)}
    assert float(task_loss(task, ref, ref)) == pytest.approx(0.0, abs=1e-6)
    assert float(task_loss(task, {task: ref[task] + _rand(2, 3, 8, 6)}, ref)) > 0.01


def test_losses_are_in_task_units() -> None:
    a = torch.zeros(1, 3, 2, 2)
    a[:, 2] = 1.0
    assert float(task_loss("normal", {"normal": -a}, {"normal": a})) == pytest.approx(2.0)
    assert float(task_loss("depth", {"depth": a[:, :1] + 0.5}, {"depth": a[:, :1]})) == 0.5
    assert float(task_loss("pose", {"pose": a + 2}, {"pose": a})) == 4.0
    # pointmap: L1 of the metric points, pointmap / scale
    ref = {"pointmap": a * 2, "pointmap_scale": torch.tensor([2.0])}
    out = {"pointmap": a * 4, "pointmap_scale": torch.tensor([2.0])}
    assert float(task_loss("pointmap", ref, ref)) == 0.0
    assert float(task_loss("pointmap", out, ref)) == pytest.approx(1.0 / 3)
    # seg: KL of the trunk's softmax from the teacher's (uniform vs one-hot-ish)
    logits = torch.tensor([[[[10.0]], [[0.0]]]])
    kl = float(task_loss("seg", {"seg": torch.zeros_like(logits)}, {"seg": logits}))
    p = torch.tensor([10.0, 0.0]).softmax(0)
    assert kl == pytest.approx(math.log(2) + float((p * p.log()).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="no distillation loss for task 'x'"):
        task_loss("x", {}, {})


def test_scale_divides_each_loss() -> None:
    ref = {"depth": torch.zeros(1, 1, 2, 2), "pose": torch.zeros(1, 1, 2, 2)}
    out = {"depth": torch.ones(1, 1, 2, 2), "pose": torch.ones(1, 1, 2, 2) * 3}
    total, parts = distill_loss(out, ref, ["depth", "pose"], {"depth": 1.0, "pose": 9.0})
    assert parts == {"depth": 1.0, "pose": 9.0} and float(total) == 2.0


def test_pck_counts_keypoints_within_5_percent_of_the_crop_diagonal() -> None:
    crop = (64, 48)  # diagonal 80 px: threshold 4 px; heatmaps 16x12: 4 px per cell
    ref = torch.zeros(1, 2, 16, 12)
    ref[0, 0, 5, 5] = ref[0, 1, 5, 5] = 1.0
    out = torch.zeros_like(ref)
    out[0, 0, 5, 6] = 1.0  # 1 cell = 4 px away: within
    out[0, 1, 7, 5] = 1.0  # 2 cells = 8 px away: not
    assert agreement("pose", {"pose": ref}, {"pose": out}, crop) == 0.5
    assert agreement("pose", {"pose": ref}, {"pose": ref}, crop) == 1.0


def test_miou_against_the_teacher_labels() -> None:
    ref = torch.zeros(1, 3, 1, 4)
    ref[0, 0, 0, :2] = ref[0, 1, 0, 2:] = 1.0  # labels 0 0 1 1
    out = torch.zeros_like(ref)
    out[0, 0, 0, :3] = out[0, 1, 0, 3] = 1.0  # labels 0 0 0 1
    # class 0: 2 / 3, class 1: 1 / 2, class 2 absent from both
    assert agreement("seg", {"seg": ref}, {"seg": out}, (1, 4)) == pytest.approx((2 / 3 + 0.5) / 2)


def test_prefix_trains_the_shared_parameters_only(teachers: list[SapiensModel]) -> None:  # noqa: F811
    trunk = build_trunk(teachers, 1, shared_state(teachers, 1, "mean"))
    params = trainable_parameters(trunk, "prefix")
    shared = [p for n, p in teachers[0].backbone.named_parameters() if shared_key(n, 1)]
    assert sum(p.numel() for p in params) == sum(p.numel() for p in shared)
    every = {id(p) for p in trunk.parameters()}
    assert len(trainable_parameters(trunk, "suffixes")) == len(every)
    with pytest.raises(ValueError, match="--train must be prefix or suffixes"):
        trainable_parameters(trunk, "all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k = 0 shares no prefix"):
        trainable_parameters(build_trunk(teachers, 0, {}), "prefix")


def test_a_trunk_equal_to_its_teachers_agrees_perfectly(teachers: list[SapiensModel]) -> None:  # noqa: F811
    trunk = build_trunk(teachers, 1, shared_state(teachers, 1, "mean")).eval()
    crops = torch.randn(2, 3, *CROP, generator=G)
    got = evaluate(trunk, teacher_outputs(teachers, crops), crops)
    assert got == {"pose": 1.0, "normal": 0.0, "seg": 1.0, "depth": 0.0}
    assert tuple(got) == TASKS
