"""Which groups a model builds for a job's tasks, where their checkpoints come from, and what
the store is told about them (family, licence, derived tasks)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from safetensors.torch import save_file

from actors import groups as groups_module
from actors.groups import ModelSpec, _checkpoint_source, build_groups, model_facts
from flows.cli import main
from models import build_model
from models.checkpoint import sapiens2_official_state_dict


def test_sapiens2_checkpoints_by_hub_name_or_in_a_weights_directory(tmp_path: Path) -> None:
    hub = ModelSpec(family="sapiens2", size="0.4b")
    assert _checkpoint_source(hub, "pointmap") == "facebook/sapiens2-pointmap-0.4b"
    assert _checkpoint_source(ModelSpec(size="0.3b"), "pose") == "facebook/sapiens-pose-0.3b"
    (tmp_path / "sapiens2_0.4b_seg.safetensors").write_bytes(b"")
    local = ModelSpec(family="sapiens2", size="0.4b", weights=str(tmp_path))
    assert _checkpoint_source(local, "seg") == str(tmp_path / "sapiens2_0.4b_seg.safetensors")
    with pytest.raises(FileNotFoundError, match=r"sapiens2_0\.4b_pose\.safetensors"):
        _checkpoint_source(local, "pose")
    # depth on Sapiens2 is the pointmap's: its group is the pointmap checkpoint
    assert local.heads_for(("pose", "depth", "pointmap")) == ("pose", "pointmap")
    assert ModelSpec(size="0.3b").heads_for(("depth",)) == ("depth",)


def test_sapiens2_groups_name_their_licence_once_and_describe_the_model(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(groups_module, "_announced", set())
    key = ModelSpec(family="sapiens2", crop_size=(192, 144))
    with caplog.at_level(logging.WARNING, logger="actors.groups"):
        built = build_groups(key, ("depth",), 2)
        build_groups(key, ("pose",), 2)
        build_groups(ModelSpec(), ("pose",), 2)  # Sapiens v1 tiny: no warning
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "Sapiens2 License" in warnings[0]
    assert "surveillance" in warnings[0]
    facts = model_facts(key, built, ("depth",))
    assert (facts["family"], facts["model"]) == ("sapiens2", "sapiens2-tiny")
    assert facts["licence"]["name"] == "Sapiens2 License"
    assert facts["derived"] == {"depth": "pointmap"}
    assert set(facts["checkpoints"]) == {"backbone", "pointmap"}
    assert facts["seg_classes"][2] == "Eyeglass" and len(facts["seg_classes"]) == 29


def test_models_verify_reads_a_sapiens2_file_and_names_its_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = build_model(("seg",), "tiny", family="sapiens2")
    path = tmp_path / "sapiens2_tiny_seg.safetensors"
    save_file(sapiens2_official_state_dict(model), str(path))
    assert main(["models", "verify", str(path)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["family"], facts["size"], facts["tasks"]) == ("sapiens2", "tiny", ["seg"])
    assert facts["licence"] == "Sapiens2 License" and "biometric" in facts["licence_summary"]
    path.write_bytes(path.read_bytes()[:-100])  # truncated: a clear one-line error
    assert main(["models", "verify", str(path)]) == 2
    assert "error:" in capsys.readouterr().err
