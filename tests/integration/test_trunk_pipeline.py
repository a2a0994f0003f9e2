"""``sapiens-stream trunk analyze|build`` on a real clip, then a job whose model is the trunk:
one group, its provenance (trunk file, k, teachers) in the store, and ``render`` on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.groups import ModelSpec, build_groups
from flows.cli import main
from flows.inline import run_inline
from flows.plan import plan_job
from flows.render import render
from flows.spec import JobSpec
from storage import open_result
from tests.inputs.boxclip import write_clip
from tests.unit.models.test_trunk import TASKS, write_teachers
from tests.unit.models.test_trunk2 import TASKS as TASKS2
from tests.unit.models.test_trunk2 import write_teachers2


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trunk")
    clip = write_clip(root / "clip.mp4", width=160, height=120, n=2)
    teachers = [f"{t}={p}" for t, p in zip(TASKS, write_teachers(root), strict=True)]
    out = root / "analysis"
    rc = main(["trunk", "analyze", *teachers, "--video", str(clip), "--frames", "2",
               "--tolerance", "pose=0,seg=0", "--out", str(out)])  # fmt: skip
    assert rc == 0
    trunk = root / "trunk.safetensors"
    rc = main(["trunk", "build", *teachers, "--k", "1", "--errors", str(out / "analyze.json"),
               "--out", str(trunk)])  # fmt: skip
    assert rc == 0
    return {"clip": clip, "analysis": out, "trunk": trunk, "root": root}


def test_analyze_reports_k_errors_flops_and_a_plot(made: dict[str, Path]) -> None:
    report = json.loads((made["analysis"] / "analyze.json").read_text())
    assert report["best_k"] == 1 and report["crops"] == 2 and report["crop_size"] == [256, 192]
    rows = report["rows"]
    assert [r["k"] for r in rows] == [0, 1, 2]
    assert all(e == 0.0 for r in rows[:2] for e in r["errors"].values())
    assert all(e > 0.0 for e in rows[2]["errors"].values())
    assert rows[0]["saved"] == 0 < rows[1]["saved"] < rows[2]["saved"]
    assert {d["part"] for d in report["divergence"]} == {"stem", "block.0", "block.1"}
    with Image.open(made["analysis"] / "errors.png") as png:
        assert png.size == (640, 420)


def test_a_job_runs_the_trunk_as_one_group_and_records_it(made: dict[str, Path]) -> None:
    weights = str(made["trunk"])
    groups = build_groups(ModelSpec(weights=weights), TASKS, 2)
    assert len(groups) == 1 and groups[0].model.tasks == TASKS
    raw = {
        "source": str(made["clip"]),
        "job_id": "trunk-job",
        "output_root": str(made["root"] / "results"),
        "tasks": list(TASKS),
        "model": {"weights": weights},
        "batch_size": 2,
    }
    outcome = run_inline(plan_job(JobSpec.from_dict(raw)))
    assert outcome.state == "succeeded"
    reader = open_result(outcome.store_url)
    models = reader.attrs["models"]
    assert {m["task"] for m in models} == {"backbone", *TASKS}
    assert not any(m["random_weights"] for m in models)
    manifest = json.loads(main_manifest(made["trunk"]))
    for m in models:
        assert m["name"] == "sapiens-tiny-trunk-k1"
        assert m["source"].startswith(f"{weights} (trunk-k1, shared=mean; teachers ")
        if m["task"] != "backbone":
            sha = manifest["teachers"][m["task"]]["sha256"]
            assert f"{m['task']}=" in m["source"] and f"sha256:{sha}" in m["source"]
    # the whole manifest in the job's attributes: teachers and hashes, k, the errors at k
    kept = reader.attrs["job"]["trunk"]
    assert (kept["k"], kept["shared"]) == (1, "mean") and kept["teachers"] == manifest["teachers"]
    assert kept["errors"] == manifest["errors"] and "distillation" not in kept
    png = render(outcome.store_url, made["root"] / "frame.png", frame=1, height=96)
    assert np.asarray(Image.open(png)).shape[0] == 96


def test_a_distilled_trunks_report_reaches_the_store(made: dict[str, Path]) -> None:
    from dataclasses import replace

    from models.trunk import load_trunk, save_trunk

    trunk = load_trunk(made["trunk"])
    report = {"steps": 40, "eval": {"pose": {"pck@0.05": [0.73, 0.80]}}}
    trunk.manifest = replace(trunk.manifest, distillation=report)
    path = save_trunk(trunk, made["root"] / "distilled.safetensors")
    raw = {
        "source": str(made["clip"]),
        "job_id": "distilled-job",
        "output_root": str(made["root"] / "results"),
        "tasks": ["pose"],
        "model": {"weights": str(path)},
        "batch_size": 2,
    }
    outcome = run_inline(plan_job(JobSpec.from_dict(raw)))
    assert outcome.state == "succeeded", outcome.error
    assert open_result(outcome.store_url).attrs["job"]["trunk"]["distillation"] == report


def main_manifest(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {})["trunk"]


def test_a_trunk_of_another_size_fails_with_one_line(made: dict[str, Path]) -> None:
    from models.errors import CheckpointError

    key = ModelSpec(size="0.3b", weights=str(made["trunk"]))
    with pytest.raises(CheckpointError, match=r"a sapiens tiny trunk, but the job asks for 0\.3b"):
        build_groups(key, ("pose",), 2)


def test_a_sapiens2_trunk_serves_every_task_and_derived_depth(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", width=160, height=120, n=2)
    trunk = tmp_path / "trunk2.safetensors"
    assert main(["trunk", "build", *map(str, write_teachers2(tmp_path)), "--k", "2",
                 "--out", str(trunk)]) == 0  # fmt: skip
    raw = {
        "source": str(clip),
        "job_id": "trunk2-job",
        "output_root": str(tmp_path / "results"),
        "tasks": [*TASKS2, "depth"],
        "model": {"family": "sapiens2", "size": "tiny", "weights": str(trunk)},
        "batch_size": 2,
    }
    outcome = run_inline(plan_job(JobSpec.from_dict(raw)))
    assert outcome.state == "succeeded"
    reader = open_result(outcome.store_url)
    models = reader.attrs["models"]
    assert {m["task"] for m in models} == {"backbone", *TASKS2}
    assert all("trunk-k2" in m["source"] and not m["random_weights"] for m in models)
    frame = reader.frame(1)
    assert frame.pointmap is not None and frame.depth is not None
