"""bench/overhead.py, the host-overhead benchmark: a quick run on a local Ray cluster prints
(and writes) one JSON object with every section, and its numbers are sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
OVERHEAD_PY = ROOT / "bench" / "overhead.py"
STAGES = {"decode", "persons", "sapiens", "writer", "driver", "ray_system"}


def test_quick_run_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "results" / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(OVERHEAD_PY), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert json.loads(proc.stdout) == doc  # stdout carries the JSON alone

    assert doc["bench"] == "overhead"
    assert doc["video"]["hw"] == [1080, 1920] and doc["video"]["frames"] == 64
    assert doc["persons_per_frame"] == 3 and doc["tasks"] == ["pose", "seg", "depth", "normal"]
    assert doc["ceiling_frames_per_s"] == pytest.approx(1000 / (22.0 * 3), abs=1e-3)
    assert doc["frames_per_s"] > 0 and 0 < doc["ratio_vs_ceiling"] < 1.5
    assert doc["window"]["frames"] > 0 and doc["window"]["seconds"] > 0

    cpu = doc["cpu_s_per_frame"]
    assert set(cpu) == STAGES
    assert all(isinstance(v, float) and v >= 0 for v in cpu.values()), cpu
    assert cpu["writer"] > 0 and cpu["sapiens"] > 0 and doc["cpu_s_per_frame_total"] > 0
    assert doc["sapiens_stand_in_outputs_cpu_s_per_frame"] > 0
    assert doc["cpu_cores_busy"] > 0 and doc["cpu_cores_busy_outside_the_run"] >= 0

    sizes = doc["bytes_per_frame"]
    assert sizes["results_through_object_store"] > 0 and sizes["stored_uncompressed"] > 0
    # compact per-person results: at most 4 MB per 1080p frame of 3 persons and 4 tasks cross
    # the object store (float32 frame maps were 39.4 MB), within 1.1x of what the store keeps
    assert sizes["results_through_object_store"] <= 4e6
    assert sizes["results_through_object_store"] <= 1.1 * sizes["stored_uncompressed"]
    assert 0 < sizes["store_on_disk"] < sizes["stored_uncompressed"]
    assert sizes["decoded_frame_rgb"] == 1080 * 1920 * 3

    crossing = doc["frames_crossing"]
    assert crossing["frames_cross_ray_at_most_once"] is True, crossing
    assert 0.9 < crossing["frame_copies_put"] < 1.1
    assert crossing["frames_read_zero_copy_by_sapiens"] == 1.0

    assert doc["peak_rss_mib"] > 0
    detection = doc["detection"]
    assert detection["model"] == "rtdetr_r18vd" and detection["frame_hw"] == [1080, 1920]
    assert detection["cpu_s_per_frame"] > 0 and detection["frames"] == 2
