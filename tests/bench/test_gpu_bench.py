"""bench/gpu.py, the one-call GPU measurement script: its CPU smoke run writes every section
with numbers (or the reason a CUDA-only part was skipped), and the peak table names devices
right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GPU_PY = ROOT / "bench" / "gpu.py"
FILES = ["compile-smoke.json", "e2e-smoke.json", "models-smoke.json", "run-smoke.json"]
COMPILE_MODES = {"eager", "cuda_graph", "compile_default", "compile_reduce_overhead"}


def test_peak_table_tells_the_h100_variants_apart() -> None:
    from bench.models import PEAK_BF16, peak_entry, peak_for_name

    assert peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_for_name("NVIDIA H100 NVL") == 835e12
    assert peak_for_name("NVIDIA H200") == 989.4e12
    assert peak_for_name("NVIDIA A10G") == 70e12
    assert peak_for_name("NVIDIA A10") == 125e12
    assert peak_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_for_name("NVIDIA L40S") == 362e12
    assert peak_for_name("NVIDIA L4") == 121e12
    assert peak_for_name("NVIDIA GeForce GTX 1080") is None
    assert peak_entry("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    # every key is reachable: no earlier key is a substring of a later one
    keys = list(PEAK_BF16)
    for i, later in enumerate(keys):
        assert not any(k in later for k in keys[:i]), later


def _positive(row: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(row[k], int | float) and row[k] > 0, (k, row)


def _rates(row: dict) -> None:
    """Numbers where the CPU can measure them; the reason where only CUDA can."""
    assert row["status"] == "ok", row
    _positive(row, "ms_per_batch", "crops_per_s", "achieved_tflops", "iters")
    assert row["mfu"] is None and row["peak_mem_gib"] is None, row
    assert row["cuda_only"].startswith("skipped: no CUDA device"), row


def test_smoke_run_writes_every_section(tmp_path: Path, shared_clip: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_BENCH_")}
    env["OUT"] = str(out)
    cmd = [sys.executable, str(GPU_PY), "--smoke", "--results-dir", str(results)]
    proc = subprocess.run(
        [*cmd, "--video", str(shared_clip)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for d in (results, out):  # written to the results dir and copied to $OUT
        assert sorted(p.name for p in d.glob("*.json")) == FILES
    docs = {name.split("-")[0]: json.loads((out / name).read_text()) for name in FILES}
    for doc in docs.values():
        env_block = doc["env"]
        assert env_block["smoke"] is True and env_block["torch"] and env_block["date_utc"]
        assert "--smoke" in env_block["command"] and "peak_bf16" in env_block

    run = docs["run"]
    assert run["status"] == "done", run
    assert run["ray_imported"] is False
    assert list(run["sections"]) == ["mfu", "e2e", "compile", "mfu_late", "trunk"]
    for name, section in run["sections"].items():
        assert section["status"] == "ok", (name, section)
        assert section["seconds"] > 0

    assert docs["models"]["status"] == docs["models"]["mfu_late_status"] == "ok"
    assert docs["compile"]["status"] == "ok"
    rows = docs["models"]["rows"]
    assert {(r["layout"], r["batch"]) for r in rows} == {
        (layout, b) for layout in ("released", "shared") for b in (1, 2)
    }
    for row in rows:
        _rates(row)
        assert row["groups"] == (4 if row["layout"] == "released" else 1)
    per_crop = {r["layout"]: r["tflop_per_crop"] for r in rows}
    assert per_crop["released"] > per_crop["shared"] > 0  # four backbones vs one

    assert docs["models"]["trunk_status"] == "ok"
    (trunk,) = docs["models"]["trunk"]["rows"]  # released vs trunk at k = L/2 vs shared
    assert trunk["status"] == "ok" and trunk["size"] == "tiny" and trunk["k"] == 1, trunk
    lay = trunk["layouts"]
    assert list(lay) == ["released", "trunk", "shared"]
    for row in lay.values():
        _positive(row, "ms_per_batch", "crops_per_s", "crops_per_s_vs_released")
    flop_ratio = [lay[n]["flops_vs_released"] for n in ("released", "trunk", "shared")]
    assert flop_ratio[0] == 1.0 > flop_ratio[1] > flop_ratio[2] > 0, flop_ratio

    e2e = docs["e2e"]
    assert e2e["status"] == "ok" and e2e["detector"] == "boxes" and e2e["detector_why"]
    assert e2e["groups"] == 4 and e2e["crops"] == e2e["frames"] * e2e["persons_per_frame"]
    _positive(
        e2e,
        "frames",
        "frames_per_s",
        "frames_per_s_steady",
        "model_in_job_s",
        "model_only_s",
        "model_only_vs_e2e",
        "peak_rss_mib",
        "store_mib",
    )
    assert set(e2e["stage_s"]) == {"decode", "persons", "infer", "write"}
    assert e2e["peak_gpu_mem_gib"] is None  # CUDA only

    compile_rows = docs["compile"]["rows"]
    assert {r["mode"] for r in compile_rows} == COMPILE_MODES
    for row in compile_rows:
        if row["mode"] == "cuda_graph":
            assert row["status"] == "skipped: needs CUDA", row
            continue
        _rates(row)
        if row["mode"] != "eager":
            _positive(row, "compile_s")


def test_without_cuda_it_asks_for_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = subprocess.run(
        [sys.executable, str(GPU_PY), "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--smoke" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
