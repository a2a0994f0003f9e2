"""Branch-point sharing for Sapiens2: tiny teachers (pose, seg, normal, pointmap) that share
their stem and blocks [0, 2) exactly: analyze finds k = 2, the trunk equals every teacher bit
for bit, and one prefix serves all four tasks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from models import load_checkpoint
from models._trunk_analyze import (
    branch_errors,
    choose_k,
    flops_saved,
    model_flops,
    pretrained_backbone,
    shared_state,
)
from models.checkpoint import sapiens2_official_state_dict
from models.sapiens import SapiensModel, build_model
from models.trunk import TrunkManifest, build_trunk, load_trunk, save_trunk, teacher_facts

TASKS = ("pose", "seg", "normal", "pointmap")
K = 2
CROP = (256, 192)


def write_teachers2(root: Path) -> list[Path]:
    """Official-layout safetensors whose stem and blocks [0, K) are equal, the rest not."""
    torch.manual_seed(0)
    models = [build_model((t,), "tiny", family="sapiens2", input_size=CROP) for t in TASKS]
    first = dict(models[0].backbone.named_parameters())
    paths = []
    with torch.no_grad():
        for task, model in zip(TASKS, models, strict=True):
            for name, param in model.backbone.named_parameters():
                block = name.startswith("blocks.") and int(name.split(".")[1]) < K
                if block or not name.startswith(("blocks.", "ln1")):
                    param.copy_(first[name])
            path = root / f"{task}.safetensors"
            state = sapiens2_official_state_dict(model)
            save_file({k: v.contiguous() for k, v in state.items()}, path)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> list[SapiensModel]:
    return [load_checkpoint(p) for p in write_teachers2(tmp_path_factory.mktemp("teachers2"))]


def _crops(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, *CROP, generator=torch.Generator().manual_seed(1))


def test_analyze_finds_k(teachers: list[SapiensModel]) -> None:
    rows = branch_errors(teachers, _crops(1), "mean")
    assert len(rows) == 5  # k = 0 .. 4
    assert all(e == 0.0 for row in rows[: K + 1] for e in row.values()), rows
    assert all(e > 0.0 for e in rows[K + 1].values()), rows
    assert choose_k(rows, {}) == K


def test_trunk_equals_each_teacher_bitwise_and_saves_three_prefixes(
    teachers: list[SapiensModel], tmp_path: Path
) -> None:
    manifest = TrunkManifest(
        family="sapiens2",
        size="tiny",
        k=K,
        shared="mean",
        teachers={t.tasks[0]: teacher_facts(t) for t in teachers},
    )
    built = build_trunk(teachers, K, shared_state(teachers, K, "mean"), manifest=manifest)
    trunk = load_trunk(save_trunk(built, tmp_path / "t2.safetensors"))
    assert trunk.tasks == TASKS and trunk.family == "sapiens2"
    x = _crops()
    with torch.no_grad():
        got = trunk(x)
        for teacher in teachers:
            for name, value in teacher(x).items():
                assert torch.equal(got[name], value), name
    meta = torch.zeros(1, 3, *CROP, device="meta")

    def flops(model: torch.nn.Module) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(meta)
        return int(counter.get_total_flops())

    separate = sum(flops(copy.deepcopy(t).to("meta")) for t in teachers)
    row = flops_saved(teachers, CROP)[K]
    assert (row["separate"], row["trunk"]) == (separate, flops(copy.deepcopy(trunk).to("meta")))
    prefix = model_flops(copy.deepcopy(teachers[0]).to("meta"), CROP, k=K)
    assert row["saved"] == (len(TASKS) - 1) * prefix > 0


def test_shared_pretrained_takes_the_pretrain_backbone(
    teachers: list[SapiensModel], tmp_path: Path
) -> None:
    pretrain = build_model((), "tiny", family="sapiens2")
    path = tmp_path / "pretrain.safetensors"
    state = sapiens2_official_state_dict(pretrain)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    shared = shared_state(teachers, K, "pretrained", pretrained_backbone(str(path), teachers[0]))
    assert torch.equal(shared["storage_tokens"], pretrain.backbone.storage_tokens)
    ours = dict(pretrain.backbone.named_parameters())
    assert torch.equal(shared["blocks.1.ffn.w3.weight"], ours["blocks.1.ffn.w3.weight"])
    assert "blocks.2.attn.proj.weight" not in shared
