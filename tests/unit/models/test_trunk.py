"""Branch-point sharing on tiny teachers built to share their stem and block 0 exactly and to
differ after it: ``analyze`` finds k = 1, the trunk equals every teacher bit for bit, and its
FLOPs per crop drop by the predicted amount."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from models import CheckpointError, load_checkpoint
from models._trunk_analyze import (
    branch_errors,
    choose_k,
    divergence,
    flops_saved,
    model_flops,
    pretrained_backbone,
    shared_state,
)
from models.sapiens import SapiensModel
from models.trunk import TrunkManifest, build_trunk, load_trunk, save_trunk, teacher_facts
from tests.unit.models.official_reference import OfficialModel

TASKS = ("pose", "normal", "seg", "depth")  # two patch paddings: 2 (pose, normal), 0
K = 1
CROP = (64, 48)


def write_teachers(root: Path, tasks: tuple[str, ...] = TASKS, k: int = K) -> list[Path]:
    """Official-layout ``.pth`` files whose stem (k >= 1) and layers [0, k) are equal, the
    rest not."""
    torch.manual_seed(0)
    refs = [OfficialModel(t) for t in tasks]
    first = refs[0].backbone
    paths = []
    with torch.no_grad():
        for task, ref in zip(tasks, refs, strict=True):
            if k:  # the stem is shared from k = 1 on
                ref.backbone.patch_embed.load_state_dict(first.patch_embed.state_dict())
                ref.backbone.pos_embed.copy_(first.pos_embed)
            for i in range(k):
                ref.backbone.layers[i].load_state_dict(first.layers[i].state_dict())
            path = root / f"{task}.pth"
            torch.save({"state_dict": ref.state_dict(), "meta": {"epoch": 1}}, path)
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> list[SapiensModel]:
    root = tmp_path_factory.mktemp("teachers")
    return [load_checkpoint(p, task=t) for p, t in zip(write_teachers(root), TASKS, strict=True)]


def _crops(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, *CROP, generator=torch.Generator().manual_seed(1))


def _trunk(teachers: list[SapiensModel], k: int = K, shared: str = "mean") -> object:
    manifest = TrunkManifest(
        family="sapiens",
        size="tiny",
        k=k,
        shared=shared,
        teachers={t.tasks[0]: teacher_facts(t) for t in teachers},
    )
    return build_trunk(teachers, k, shared_state(teachers, k, shared), manifest=manifest)


@pytest.mark.parametrize("shared", ["mean", "pose", "seg"])
def test_analyze_errors_are_zero_up_to_k_and_positive_after(
    teachers: list[SapiensModel], shared: str
) -> None:
    rows = branch_errors(teachers, _crops(), shared)
    assert len(rows) == 3  # k = 0, 1, 2 (tiny: two blocks)
    assert all(e == 0.0 for row in rows[: K + 1] for e in row.values()), rows
    # a task whose own blocks are the shared ones is exact at every k
    assert all((e > 0.0) == (task != shared) for task, e in rows[K + 1].items()), rows
    assert choose_k(rows, {}) == K
    assert choose_k(rows, {t: 1e9 for t in TASKS}) == 2


def test_divergence_is_zero_for_shared_parts_only(teachers: list[SapiensModel]) -> None:
    rows = {r["part"]: r["relative_l2"] for r in divergence(teachers)}
    assert rows == {"stem": 0.0, "block.0": 0.0, "block.1": pytest.approx(rows["block.1"])}
    assert rows["block.1"] > 0.1


def test_saved_trunk_equals_every_teacher_bitwise(
    teachers: list[SapiensModel], tmp_path: Path
) -> None:
    path = save_trunk(_trunk(teachers), tmp_path / "t.safetensors")  # type: ignore[arg-type]
    trunk = load_trunk(path)
    assert trunk.tasks == TASKS and trunk.family == "sapiens" and trunk.size == "tiny"
    assert trunk.manifest is not None and trunk.manifest.k == K
    assert trunk.manifest.teachers["pose"]["sha256"] == teachers[0].checkpoints["pose"].sha256
    assert "trunk-k1" in trunk.checkpoints["seg"].source
    x = _crops()
    with torch.no_grad():
        got = trunk(x)
        for teacher in teachers:
            task = teacher.tasks[0]
            assert torch.equal(got[task], teacher(x)[task]), task
        assert set(trunk(x, ("seg",))) == {"seg"}
    # the shared prefix is stored once
    n_trunk = sum(p.numel() for p in trunk.parameters())
    n_teachers = sum(p.numel() for t in teachers for p in t.parameters())
    prefix = sum(
        p.numel()
        for n, p in teachers[0].backbone.named_parameters()
        if not n.startswith(("blocks.1", "norm"))
    )
    assert n_teachers - n_trunk == (len(TASKS) - 1) * prefix


def _flops(fn: object, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(x)  # type: ignore[operator]
    return int(counter.get_total_flops())


def test_flops_per_crop_drop_by_the_predicted_amount(teachers: list[SapiensModel]) -> None:
    # the report counts on the meta device (SDPA counts differ from the CPU kernel's)
    meta = torch.zeros(1, 3, *CROP, device="meta")
    trunk = _trunk(teachers).to("meta")  # type: ignore[attr-defined]
    separate = sum(_flops(copy.deepcopy(t).to("meta"), meta) for t in teachers)
    rows = flops_saved(teachers, CROP)
    row = rows[K]
    assert (row["separate"], row["trunk"]) == (separate, _flops(trunk, meta))
    # one prefix per patch padding: (2 - 1) + (2 - 1) prefixes saved
    assert row["saved"] == 2 * model_flops(copy.deepcopy(teachers[0]).to("meta"), CROP, k=K) > 0
    assert rows[0]["saved"] == 0
    # on the CPU, with its own counts, the same relation holds
    x = torch.randn(1, 3, *CROP)
    drop = sum(_flops(t, x) for t in teachers) - _flops(_trunk(teachers), x)
    assert drop == 2 * model_flops(teachers[0], CROP, k=K) > 0


def test_one_padding_saves_t_minus_one_prefixes(tmp_path: Path) -> None:
    tasks = ("pose", "normal")
    ts = [
        load_checkpoint(p, task=t)
        for p, t in zip(write_teachers(tmp_path, tasks), tasks, strict=True)
    ]
    x = torch.randn(1, 3, *CROP)
    drop = sum(_flops(t, x) for t in ts) - _flops(_trunk(ts), x)
    assert drop == (len(ts) - 1) * model_flops(ts[0], CROP, k=K)


def test_bad_inputs_fail_with_one_line(teachers: list[SapiensModel], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--shared must be mean, pretrained or one of"):
        shared_state(teachers, K, "nope")
    with pytest.raises(ValueError, match="needs --pretrained"):
        shared_state(teachers, K, "pretrained")
    with pytest.raises(ValueError, match=r"k must be in \[0, 2\], got 3"):
        build_trunk(teachers, 3, shared_state(teachers, 2, "mean"))
    save_file({"x": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no trunk manifest"):
        load_trunk(tmp_path / "plain.safetensors")


def test_shared_pretrained_takes_the_pretrain_blocks(
    teachers: list[SapiensModel], tmp_path: Path
) -> None:
    ref = OfficialModel("pretrain")
    path = tmp_path / "pretrain.pth"
    torch.save({"state_dict": ref.state_dict(), "meta": {}}, path)
    weights = pretrained_backbone(str(path), teachers[0])
    state = shared_state(teachers, K, "pretrained", weights)
    qkv = ref.state_dict()["backbone.layers.0.attn.qkv.weight"]
    assert torch.equal(state["blocks.0.attn.qkv.weight"], qkv)
    assert state["pos_embed"].shape == teachers[0].backbone.pos_embed.shape  # cls slot dropped
    rows = branch_errors(teachers, _crops(1), "pretrained", pretrained=weights)
    assert all(e == 0.0 for e in rows[0].values())
    assert all(e > 0.0 for e in rows[1].values())


def test_k0_shares_nothing_and_equals_teachers_with_their_own_stems(tmp_path: Path) -> None:
    ts = [
        load_checkpoint(p, task=t)
        for p, t in zip(write_teachers(tmp_path, k=0), TASKS, strict=True)
    ]
    assert divergence(ts)[0]["relative_l2"] > 0  # stems differ
    x = _crops(1)
    with torch.no_grad():
        got = _trunk(ts, k=0)(x)  # type: ignore[operator]
        assert all(torch.equal(got[t.tasks[0]], t(x)[t.tasks[0]]) for t in ts)
