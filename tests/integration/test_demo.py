"""The README's demo command, end to end on the real clip: decode, crop, infer, decode, draw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
