"""``sapiens-stream distill`` on Ray Train (one CPU worker): killed after its first checkpoint,
rerun from it, and the distilled trunk agrees with its teachers on held-out frames better than
the un-distilled ``--shared mean`` trunk, on every task; bad input fails with one line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flows.cli import main
from models.trunk import load_trunk, read_manifest
from tests.unit.models.test_trunk import TASKS, write_teachers

pytestmark = pytest.mark.ray

STEPS, EVERY = 40, 10
ROOT = Path(__file__).resolve().parents[2]


def write_noise_clip(path: Path, *, n: int, width: int = 96, height: int = 72) -> Path:
    """``n`` frames of smooth random colour fields, each one different."""
    g = torch.Generator().manual_seed(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", 25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(n):
            low = torch.rand(1, 3, 6, 8, generator=g)
            img = F.interpolate(low, size=(height, width), mode="bicubic").clamp(0, 1)
            rgb = np.ascontiguousarray((img[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy())
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_perturbed_teachers(root: Path, noise: float = 0.02) -> list[str]:
    """Teachers equal but for their first block (layer 0), which each task moved its own way."""
    g = torch.Generator().manual_seed(5)
    sources = []
    for task, path in zip(TASKS, write_teachers(root, k=2), strict=True):
        ckpt = torch.load(path, weights_only=False)
        for key, value in ckpt["state_dict"].items():
            if key.startswith("backbone.layers.0.") and value.dtype.is_floating_point:
                value.add_(torch.randn(value.shape, generator=g) * noise)
        torch.save(ckpt, path)
        sources.append(f"{task}={path}")
    return sources


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("distill")
    clip = write_noise_clip(root / "clip.mp4", n=24)
    teachers = write_perturbed_teachers(root)
    trunk = root / "trunk.safetensors"
    assert main(["trunk", "build", *teachers, "--k", "1", "--out", str(trunk)]) == 0
    return {"root": root, "clip": clip, "teachers": teachers, "trunk": trunk}


def _argv(made: dict[str, object], out: Path) -> list[str]:
    return ["distill", str(made["trunk"]), *made["teachers"], "--video", str(made["clip"]),
            "--frames", "24", "--holdout", "6", "--crop-size", "64x48", "--steps", str(STEPS),
            "--checkpoint-every", str(EVERY), "--lr", "2e-4", "--train", "suffixes",
            "--out", str(out)]  # fmt: skip


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    with log.open("wb") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *argv],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


def _steps(log: Path) -> list[int]:
    return [int(m) for m in re.findall(rf"(\d+)/{STEPS} steps", log.read_text())]


def test_killed_run_resumes_and_beats_the_undistilled_trunk(made: dict[str, object]) -> None:
    root = made["root"]
    assert isinstance(root, Path)
    out = root / "distilled.safetensors"
    runs = root / "distilled.train" / "distill"
    first = _spawn(_argv(made, out), root / "first.log")
    deadline = time.monotonic() + 60
    # the controller writes its snapshot once a checkpoint is registered
    while not (runs / "checkpoint_manager_snapshot.json").exists():
        assert first.poll() is None, (root / "first.log").read_text()
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)
    # the driver and every process it started (its local Ray cluster, the training workers),
    # as when the machine dies: Ray's workers outlive a driver killed alone
    for pid in [first.pid, *_descendants(first.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    first.wait()
    assert not out.exists()
    saved = set()
    for path in runs.glob("checkpoint_*/distill.pt"):
        try:  # a checkpoint being copied when the run was killed is not one
            saved.add(int(torch.load(path, weights_only=True)["step"]))
        except (RuntimeError, EOFError, KeyError):
            continue
    assert saved and max(saved) < STEPS, saved

    second = _spawn(_argv(made, out), root / "second.log")
    assert second.wait(timeout=120) == 0, (root / "second.log").read_text()
    steps = _steps(root / "second.log")
    # it started from a saved step, not from 0, and finished
    assert steps[0] - EVERY in saved and steps[0] > EVERY and steps[-1] == STEPS, (steps, saved)

    report = json.loads(out.with_suffix(".distill.json").read_text())
    before, after = report["before"], report["after"]
    assert report["steps"] == STEPS and report["pck_normaliser"] == "crop diagonal"
    # held-out frames: PCK@0.05 and mIoU up by 0.05, depth and normal errors down by 20%
    for task in ("pose", "seg"):
        assert after[task] >= before[task] + 0.05, (task, before, after)
    for task in ("depth", "normal"):
        assert after[task] <= 0.8 * before[task], (task, before, after)
    assert report["flops"]["trunk"] < report["flops"]["teachers"]
    assert report["throughput"]["trunk_crops_per_s"] > 0
    manifest = read_manifest(out)
    assert manifest.distillation == report and manifest.k == 1 and manifest.shared == "mean"
    assert "distilled 40 steps" in load_trunk(out).checkpoints["backbone"].source


def test_bad_input_fails_with_one_line(
    made: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.unit.models.test_trunk2 import write_teachers2

    teachers = list(made["teachers"])  # type: ignore[call-overload]
    out = tmp_path / "o.safetensors"

    def error(argv: list[str]) -> str:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    argv = _argv(made, out)
    assert "no such trunk file" in error([argv[0], str(tmp_path / "none.safetensors"), *argv[2:]])
    other = [f"pointmap={write_teachers2(tmp_path)[3]}"]
    assert "one family and size" in error([*argv[:2], *teachers[:3], *other, *argv[6:]])
    assert "the trunk's tasks are" in error([*argv[:2], *teachers[:3], *argv[6:]])
    ckpt = torch.load(teachers[0].partition("=")[2], weights_only=False)
    ckpt["state_dict"]["backbone.pos_embed"] += 1
    torch.save(ckpt, tmp_path / "pose.pth")
    moved = [f"pose={tmp_path / 'pose.pth'}", *teachers[1:]]
    assert "is not the trunk's teacher" in error([*argv[:2], *moved, *argv[6:]])
    assert "need more than --holdout 24" in error([*argv, "--holdout", "24"])
    assert "--holdout must be at least 1" in error([*argv, "--holdout", "0"])
    assert not out.exists()
