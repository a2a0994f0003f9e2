"""Sapiens2 hub names (SPEC §5.1): repositories, file names, offline resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

from models import build_model, load_checkpoint, sapiens2_official_state_dict
from models.errors import CheckpointError
from models.hub import hub_ref, parse_hub_name


@pytest.mark.parametrize(
    ("name", "repo", "file", "task", "size"),
    [
        (
            "facebook/sapiens2-pose-0.4b",
            "facebook/sapiens2-pose-0.4b",
            "sapiens2_0.4b_pose.safetensors",
            "pose",
            "0.4b",
        ),
        (
            "hf://facebook/sapiens2-pointmap-5b",
            "facebook/sapiens2-pointmap-5b",
            "sapiens2_5b_pointmap.safetensors",
            "pointmap",
            "5b",
        ),
        (
            "facebook/sapiens2-pretrain-1b-4k",
            "facebook/sapiens2-pretrain-1b-4k",
            "sapiens2_1b_4k_pretrain.safetensors",
            "pretrain",
            "1b-4k",
        ),
        (
            "facebook/sapiens2-pretrain-0.1b",
            "facebook/sapiens2-pretrain-0.1b",
            "sapiens2_0.1b_pretrain.safetensors",
            "pretrain",
            "0.1b",
        ),
    ],
)
def test_parse_sapiens2_hub_names(name: str, repo: str, file: str, task: str, size: str) -> None:
    ref = parse_hub_name(name)
    assert ref is not None
    assert (ref.repo_id, ref.filenames, ref.task, ref.size, ref.family) == (
        repo,
        (file,),
        task,
        size,
        "sapiens2",
    )


def test_unreleased_or_unknown_sapiens2_names() -> None:
    assert parse_hub_name("facebook/sapiens2-depth-1b") is None
    assert parse_hub_name("facebook/sapiens2-pose-0.3b") is None
    with pytest.raises(FileNotFoundError, match="no released Sapiens2 checkpoint"):
        hub_ref("pose", "0.1b", family="sapiens2")
    with pytest.raises(ValueError, match="safetensors only"):
        hub_ref("pose", "1b", "torchscript", family="sapiens2")
    assert hub_ref("pose", "1b").family == "sapiens"


def test_sapiens2_hub_name_resolves_offline_from_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "src.safetensors"
    state = sapiens2_official_state_dict(build_model(["seg"], "tiny", family="sapiens2"))
    save_file({k: v.contiguous() for k, v in state.items()}, src)
    ref = hub_ref("seg", "1b", family="sapiens2")
    root = tmp_path / "hub" / ("models--" + ref.repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    (root / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (root / "snapshots" / ("0" * 40) / ref.filenames[0]).write_bytes(src.read_bytes())
    model = load_checkpoint(ref.repo_id, cache_dir=tmp_path / "hub", local_files_only=True)
    assert (model.family, model.tasks) == ("sapiens2", ("seg",))
    assert model.checkpoints["seg"].source == "facebook/sapiens2-seg-1b"
    with pytest.raises(CheckpointError, match="is a seg checkpoint, but task='pose'"):
        load_checkpoint(ref.repo_id, task="pose", cache_dir=tmp_path / "hub")
