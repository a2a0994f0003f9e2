"""Result-store benchmark: write throughput, bytes per person-frame per task, read latency.

Run: ``python bench/storage.py [--frames 48] [--persons 10]``; prints one JSON object.

``write_cpu_ms_per_frame`` is the CPU time of the whole write (every thread of the process)
per frame; ``encode_cpu_ms_per_frame`` the part spent encoding frames to their stored dtypes.

Data is storage.synthetic: upright-ellipse persons with smooth depth and normals plus noise,
sub-pixel keypoints (K=308), all four tasks. Frame generation is not timed. Compressed sizes
depend on how much of the frame persons cover, so the JSON reports that coverage.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage import FrameResult, StoreSpec, Writer, ZarrLayout, open_result  # noqa: E402
from storage._encode import encode_frame  # noqa: E402
from storage.synthetic import synthetic_frame  # noqa: E402

SOURCE_HW = (720, 1280)
GROUPS = {
    "pose": ["pose"],
    "seg": ["seg"],
    "depth": ["depth"],
    "normal": ["normal"],
    "persons+frames": ["persons", "frames", "blocks"],
}


def make_frames(spec: StoreSpec, n: int, persons: int) -> list[FrameResult]:
    """Frames at the source size (the writer downsamples when the spec says so)."""
    full = StoreSpec.for_source(*SOURCE_HW, tasks=spec.tasks, num_keypoints=spec.num_keypoints)
    return [synthetic_frame(full, i, n_persons=persons) for i in range(n)]


def write(path: Path, spec: StoreSpec, frames: list[FrameResult]) -> tuple[float, float]:
    """Write all frames (any order within a block) and finalize; return the seconds taken
    and the CPU seconds this process spent (every thread: zarr compresses in its own)."""
    order = [f for b in range(0, len(frames), 8) for f in reversed(frames[b : b + 8])]
    t0, c0 = time.perf_counter(), time.process_time()
    w = Writer.create(path, spec, job={"job_id": "bench"}, capacity_frames=len(frames))
    for f in order:
        w.add(f)
    w.finalize()
    return time.perf_counter() - t0, time.process_time() - c0


def encode_cpu_s(spec: StoreSpec, frames: list[FrameResult]) -> float:
    """CPU seconds of encoding alone (validation, resampling to the output size, quantising):
    the part of a write that is not compression or I/O."""
    layout = ZarrLayout.from_spec(spec)
    c0 = time.process_time()
    for f in frames:
        encode_frame(layout, f)
    return time.process_time() - c0


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def raw_float32_per_person_frame(spec: StoreSpec, persons: int) -> dict[str, float]:
    """Raw float32 bytes of one person-frame per task (frame-sized maps shared by P persons)."""
    hw = spec.height * spec.width
    return {
        "pose": spec.num_keypoints * 3 * 4,  # x, y, score
        "seg": hw * 2 * 4 / persons,  # part label and owning person as float32
        "depth": hw * 4 / persons,
        "normal": hw * 3 * 4 / persons,
        "persons+frames": 6 * 4 + 4 * 4 / persons,  # box, score, track; frame scalars
    }


def size_report(path: Path, spec: StoreSpec, n: int, persons: int) -> dict[str, Any]:
    raw = raw_float32_per_person_frame(spec, persons)
    person_frames = n * persons
    per_task: dict[str, Any] = {}
    for name, dirs in GROUPS.items():
        stored = sum(dir_bytes(path / d) for d in dirs if (path / d).exists())
        per_pf = stored / person_frames
        per_task[name] = {
            "stored_bytes": round(per_pf, 1),
            "raw_float32_bytes": round(raw[name], 1),
            "ratio": round(per_pf / raw[name], 4),
        }
    stored_total = dir_bytes(path) / person_frames
    raw_total = sum(raw.values())
    return {
        "per_task": per_task,
        "all_tasks": {
            "stored_bytes": round(stored_total, 1),
            "raw_float32_bytes": round(raw_total, 1),
            "ratio": round(stored_total / raw_total, 4),
        },
    }


def read_latency(path: Path, n: int, reps: int) -> dict[str, float]:
    """Milliseconds to open the store once, then to read one whole frame (all tasks)."""
    t0 = time.perf_counter()
    reader = open_result(path)
    open_ms = (time.perf_counter() - t0) * 1000
    rng = np.random.default_rng(0)
    times = []
    for i in rng.integers(0, n, reps):
        t = time.perf_counter()
        reader.frame(int(i))
        times.append((time.perf_counter() - t) * 1000)
    return {
        "open_ms": round(open_ms, 2),
        "frame_p50_ms": round(float(np.percentile(times, 50)), 2),
        "frame_p95_ms": round(float(np.percentile(times, 95)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--persons", type=int, default=10)
    parser.add_argument("--reps", type=int, default=40)
    args = parser.parse_args()
    out: dict[str, Any] = {"frames": args.frames, "persons_per_frame": args.persons}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        for label, downscale in (("1280x720", 1), ("640x360", 2)):
            spec = StoreSpec.for_source(*SOURCE_HW, downscale=downscale)
            frames = make_frames(spec, args.frames, args.persons)
            path = Path(tmp) / f"{label}.zarr"
            seconds, cpu_s = write(path, spec, frames)
            coverage = float(np.mean([(f.person_map > 0).mean() for f in frames]))
            out[label] = {
                "write_frames_per_s": round(args.frames / seconds, 2),
                "write_cpu_ms_per_frame": round(cpu_s / args.frames * 1000, 1),
                "encode_cpu_ms_per_frame": round(
                    encode_cpu_s(spec, frames) / args.frames * 1000, 1
                ),
                "person_pixel_coverage": round(coverage, 3),
                "bytes_per_person_frame": size_report(path, spec, args.frames, args.persons),
                "read": read_latency(path, args.frames, args.reps),
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
