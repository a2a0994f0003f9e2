"""The README's demo command, end to end on the real clip: decode, crop, infer, decode, draw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.demo import run_demo


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_demo_writes_one_picture_per_sampled_frame(shared_clip: Path, tmp_path: Path) -> None:
    result = run_demo(
        shared_clip,
        tmp_path,
        count=2,
        stride=100,
        boxes=[[100.0, 50.0, 700.0, 700.0], [600.0, 0.0, 1280.0, 720.0]],
    )
    assert result.frames == 2 and result.persons == 4 and result.random_weights
    assert [Path(p).name for p in result.images] == ["frame_000000.png", "frame_000100.png"]
    img = np.asarray(Image.open(result.images[1]))
    assert img.shape == (360, 4 * 640, 3)
    assert img.std() > 10  # a real picture, not a blank canvas
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == list(result.images)


def test_cli_demo_rejects_a_missing_input(tmp_path: Path) -> None:
    proc = _cli("demo", "--input", str(tmp_path / "nope.mp4"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "no input video" in proc.stderr


def test_cli_models_verify_prints_provenance(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tests.unit.models.official_reference import OfficialModel

    save_file(
        {k: v.contiguous() for k, v in OfficialModel("normal").state_dict().items()},
        tmp_path / "n.safetensors",
    )
    proc = _cli("models", "verify", str(tmp_path / "n.safetensors"), "--task", "normal")
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["size"] == "tiny" and facts["tasks"] == ["normal"]
    assert facts["checkpoints"]["normal"]["format"] == "safetensors"
    bad = _cli("models", "verify", str(tmp_path / "n.safetensors"), "--task", "pose")
    assert bad.returncode == 2 and "does not fit the model" in bad.stderr


#: The released 0.3b file of each task (models/hub.py), written here with tiny weights.
RELEASED_03B = {
    "pose": "sapiens_0.3b_goliath_best_goliath_AP_573.pth",
    "seg": "sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194.pth",
    "depth": "sapiens_0.3b_render_people_epoch_100.pth",
    "normal": "sapiens_0.3b_normal_render_people_epoch_66.pth",
}


def _banner_share(image: np.ndarray) -> float:
    """Share of the banner band's pixels in the banner colour."""
    from flows.visualize import BANNER_RGB, banner_height

    band = image[: banner_height(image.shape[0])]
    return float(np.all(band == np.array(BANNER_RGB, np.uint8), axis=-1).mean())


def test_demo_says_random_weights_and_loads_released_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random weights: a banner on the picture and a note in the output. A released size with
    ``weights`` a directory: its files are loaded (no banner, no note, their paths named)."""
    import torch

    from actors import groups
    from tests.inputs.boxclip import write_clip
    from tests.unit.models.official_reference import OfficialModel

    clip = write_clip(tmp_path / "clip.mp4", width=320, height=240, n=1)
    rand = run_demo(clip, tmp_path / "rand", count=1, stride=1)
    summary = json.loads((tmp_path / "rand" / "summary.json").read_text())
    assert rand.random_weights and summary["note"].startswith("random weights: not a prediction")
    weights = tmp_path / "weights"
    weights.mkdir()
    for task, name in RELEASED_03B.items():
        state = OfficialModel(task).state_dict()
        torch.save({"state_dict": state, "meta": {}}, weights / name)
    monkeypatch.setattr(groups, "INPUT_SIZE", (256, 192))  # tiny files: keep the crops small
    real = run_demo(clip, tmp_path / "real", count=1, stride=1, size="0.3b", weights=str(weights))
    summary = json.loads((tmp_path / "real" / "summary.json").read_text())
    assert not real.random_weights and "note" not in summary
    assert summary["checkpoints"]["pose"] == str(weights / RELEASED_03B["pose"])
    shown = np.asarray(Image.open(rand.images[0]))
    plain = np.asarray(Image.open(real.images[0]))
    assert shown.shape == plain.shape
    assert _banner_share(shown) > 0.5  # red band with white words
    assert (shown[:10] == 255).all(axis=-1).any()
    assert _banner_share(plain) < 0.01


def test_cli_demo_fails_clearly_without_released_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main
    from tests.inputs.boxclip import write_clip

    clip = str(write_clip(tmp_path / "clip.mp4", width=320, height=240, n=1))
    argv = ["demo", "--input", clip, "--out", str(tmp_path / "out"), "--frames", "1"]
    assert main([*argv, "--model", "0.3b", "--weights", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sapiens_0.3b_goliath_best_goliath_AP_573.pth" in err and err.count("\n") == 1
    assert main([*argv, "--weights", str(tmp_path)]) == 2  # tiny has no weights to load
    assert "the tiny model has random weights" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
