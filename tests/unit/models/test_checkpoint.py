"""Checkpoint loading: every released format, written by the test itself, loads strictly and
reproduces the source model's outputs."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import (
    CheckpointError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
    load_checkpoint,
)
from models.hub import download, hub_ref, parse_hub_name
from tests.unit.models.official_reference import OfficialModel

TOL = 1e-4


def _image(h: int = 256, w: int = 192, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, h, w, generator=g)


def _ours(model: torch.nn.Module, x: torch.Tensor, task: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out["features"] if task == "pretrain" else out[task]


_FAKE_PACKAGES = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")


def _save_pth(ref: OfficialModel, path: Path) -> None:
    """Save as the released files are: ``state_dict`` plus a ``meta`` holding an object whose
    class lives in mmengine. A throw-away module tree stands in for mmengine while saving and is
    removed before loading, so the loader runs without it."""
    mods = {name: types.ModuleType(name) for name in _FAKE_PACKAGES}

    class HistoryBuffer:
        def __init__(self) -> None:
            self.values = [1.0, 2.0]

    HistoryBuffer.__module__ = _FAKE_PACKAGES[-1]
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    mods[_FAKE_PACKAGES[-1]].HistoryBuffer = HistoryBuffer  # type: ignore[attr-defined]
    sys.modules.update(mods)
    try:
        meta = {"epoch": 3, "hub": {"log": HistoryBuffer()}, "dtype": torch.float32}
        torch.save({"state_dict": ref.state_dict(), "meta": meta}, path)
    finally:
        for name in _FAKE_PACKAGES:
            del sys.modules[name]


@pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal", "pretrain"])
def test_official_pth_with_mmengine_meta_loads_without_mmengine(tmp_path: Path, task: str) -> None:
    assert "mmengine" not in sys.modules
    ref = OfficialModel(task).eval()
    path = tmp_path / "ckpt.pth"
    _save_pth(ref, path)
    model = load_checkpoint(path, task=task)
    x = _image(128, 128) if task == "pretrain" else _image()
    with torch.no_grad():
        expected = ref(x)
    assert (_ours(model, x, task) - expected).abs().max().item() <= TOL
    assert model.size == "tiny"
    assert model.checkpoints["backbone"].fmt == "pth"
    assert len(model.checkpoints["backbone"].sha256 or "") == 64
    assert "mmengine" not in sys.modules


def test_full_resolution_pose_matches(tmp_path: Path) -> None:
    ref = OfficialModel("pose").eval()
    save_file(ref.state_dict(), tmp_path / "p.safetensors")
    model = load_checkpoint(tmp_path / "p.safetensors", task="pose")
    x = _image(1024, 768)
    with torch.no_grad():
        expected = ref(x)
    assert expected.shape == (2, 308, 256, 192)
    assert (_ours(model, x, "pose") - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("task", ["pose", "depth"])
def test_safetensors_with_official_keys(tmp_path: Path, task: str) -> None:
    ref = OfficialModel(task).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    model = load_checkpoint(tmp_path / "w.safetensors", task=task)
    x = _image()
    with torch.no_grad():
        assert (_ours(model, x, task) - ref(x)).abs().max().item() <= TOL
    assert model.checkpoints[task].fmt == "safetensors"


@pytest.mark.parametrize(("task", "k"), [("pose", 17), ("normal", 308)])
def test_traced_torchscript_lite_file(tmp_path: Path, task: str, k: int) -> None:
    ref = OfficialModel(task, num_keypoints=k).eval()
    x = _image()
    with torch.no_grad():
        traced = torch.jit.trace(ref, x)
    path = tmp_path / f"sapiens_tiny_{task}_torchscript.pt2"
    traced.save(str(path))
    model = load_checkpoint(path, task=task)
    with torch.no_grad():
        expected = ref(x)
    assert (_ours(model, x, task) - expected).abs().max().item() <= TOL
    assert model.checkpoints[task].fmt == "torchscript"
    if task == "pose":
        assert model.heads["pose"].spec.out_dim == k


def test_bfloat16_export_lite_file(tmp_path: Path) -> None:
    ref = OfficialModel("seg").eval().to(torch.bfloat16)
    x = _image().to(torch.bfloat16)
    program = torch.export.export(ref, (x,))
    path = tmp_path / "sapiens_tiny_seg_bfloat16.pt2"
    torch.export.save(program, str(path))
    model = load_checkpoint(path, task="seg", dtype=torch.bfloat16)
    assert model.checkpoints["seg"].fmt == "export"
    with torch.no_grad():
        expected = ref(x).float()
    got = _ours(model, x, "seg").float()
    assert (got - expected).abs().max().item() <= 0.05 * expected.abs().max().item()


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": OfficialModel("depth").state_dict(), "meta": Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"system.*not on the allow-list"):
        load_checkpoint(path, task="depth")
    assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (eval, ("1+1",))

    path = tmp_path / "evil.pth"
    torch.save({"meta": Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_checkpoint(path, task="depth")


def _state(task: str = "pose") -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in OfficialModel(task).state_dict().items()}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda s: s.pop("backbone.layers.1.attn.qkv.weight"),
            r"missing \(1\): \['backbone.blocks.1.attn.qkv.weight'\]",
        ),
        (
            lambda s: s.__setitem__("backbone.layers.0.extra", torch.zeros(1)),
            r"unexpected \(1\): \['backbone.layers.0.extra'\]",
        ),
        (
            lambda s: s.__setitem__("head.final_layer.bias", torch.zeros(308, 2)),
            r"shape mismatch .*heads.pose.out.bias",
        ),
        (lambda s: s.__setitem__("mystery.weight", torch.zeros(1)), r"unexpected .*mystery.weight"),
    ],
)
def test_mismatches_are_named(tmp_path: Path, edit: object, match: str) -> None:
    state = _state()
    edit(state)  # type: ignore[operator]
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "w.safetensors", task="pose")


def test_wrong_task_for_the_file_is_reported(tmp_path: Path) -> None:
    save_file(_state("pose"), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path / "w.safetensors", task="depth")


def test_garbage_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "video.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(bad, task="pose")
    with pytest.raises(CheckpointError, match="neither a file nor a hub name"):
        load_checkpoint(tmp_path / "absent.pth", task="pose")


def test_pretrain_weights_adapt_into_a_finetune_backbone(tmp_path: Path) -> None:
    """The official load hook: drop the cls slot and bicubically resize 64x64 -> 64x48."""
    pre = OfficialModel("pretrain").state_dict()
    state = {k: v for k, v in pre.items() if k != "backbone.cls_token"}
    state.update({k: v for k, v in _state("depth").items() if k.startswith("decode_head.")})
    save_file(state, tmp_path / "w.safetensors")
    model = load_checkpoint(tmp_path / "w.safetensors", task="depth")
    assert model.backbone.pos_embed.shape == (1, 64 * 48, 64)


# --- hub names -----------------------------------------------------------------------------


def _fake_hub_cache(cache: Path, repo: str, filename: str, payload: Path) -> None:
    """Lay out ``payload`` as huggingface_hub's cache would after a download."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / filename).write_bytes(payload.read_bytes())


def test_hub_name_resolves_offline_from_the_cache(tmp_path: Path) -> None:
    ref = OfficialModel("pose").eval()
    x = _image()
    src = tmp_path / "src.pt2"
    with torch.no_grad():
        torch.jit.trace(ref, x).save(str(src))
    hub = hub_ref("pose", "0.3b", "torchscript")
    assert hub.filenames[0] == "sapiens_0.3b_goliath_best_goliath_AP_573_torchscript.pt2"
    _fake_hub_cache(tmp_path / "hub", hub.repo_id, hub.filenames[0], src)
    model = load_checkpoint(
        "facebook/sapiens-pose-0.3b-torchscript", cache_dir=tmp_path / "hub", local_files_only=True
    )
    with torch.no_grad():
        assert (_ours(model, x, "pose") - ref(x)).abs().max().item() <= TOL
    assert model.checkpoints["pose"].source == "facebook/sapiens-pose-0.3b-torchscript"


def test_hub_name_with_no_cache_and_no_network_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"facebook/sapiens-seg-1b.*local file path"):
        download(hub_ref("seg", "1b"), cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(CheckpointNotFoundError, match="no released checkpoint"):
        hub_ref("pose", "2b")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("facebook/sapiens-pose-1b", ("facebook/sapiens-pose-1b", "pose", "1b", "original")),
        (
            "hf://facebook/sapiens-depth-2b-bfloat16",
            ("facebook/sapiens-depth-2b-bfloat16", "depth", "2b", "bfloat16"),
        ),
        (
            "facebook/sapiens-normal-0.6b-torchscript",
            ("facebook/sapiens-normal-0.6b-torchscript", "normal", "0.6b", "torchscript"),
        ),
        ("someone/else", None),
        ("facebook/sapiens-pose-3b", None),
    ],
)
def test_parse_hub_name(name: str, expected: tuple | None) -> None:
    ref = parse_hub_name(name)
    got = None if ref is None else (ref.repo_id, ref.task, ref.size, ref.fmt)
    assert got == expected
