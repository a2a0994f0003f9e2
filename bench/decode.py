"""Decode cost per kept frame: full size against a reduced size, PyAV against torchcodec.

Prints one JSON object. For each clip (the shared 720p clip and a synthetic 1080p one, written
here) and each way of reading it (the coded size, or downscaled to ``--max-side`` in the RGB
conversion; PyAV, and torchcodec on its CPU device where it is installed and may read the
clip), the process CPU time and wall time per kept frame of a :class:`media.VideoReader`
pass, each the best of ``--repeat`` passes, and the ratios against full-size PyAV. One
decoder thread each, so CPU time is the decoder's own work.

Usage: python bench/decode.py [--max-side 640] [--frames 120] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from media import (
    SizeFloor,
    VideoReader,
    VideoWriter,
    choose_backend,
    probe_video,
    torchcodec_error,
)

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "people_walking_720p.avi"


def synthetic_1080p(path: Path, frames: int) -> Path:
    """``frames`` frames of 1920x1080 H.264: moving gradients and boxes (not flat, so the
    decoder has real work)."""
    yy, xx = np.mgrid[0:1080, 0:1920]
    with VideoWriter(path, fps=25.0, codec="libx264") as sink:
        for i in range(frames):
            img = np.stack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, (xx + yy) // 12 % 256], -1)
            img = img.astype(np.uint8)
            x = 40 + 12 * i % 1700
            img[300:700, x : x + 160] = 230
            sink.write(img)
    return path


def measure(source: Path, backend: str, max_side: int | None, repeat: int) -> dict[str, Any]:
    """Best-of-``repeat`` CPU and wall milliseconds per kept frame of one full pass."""
    floor = None if max_side is None else SizeFloor(side=max_side)
    info = probe_video(
        source, max_side=None, floor=floor, threads=1, open_timeout_s=30, read_timeout_s=30
    )
    if backend != "pyav":
        try:
            choose_backend(backend, source, info, cuda=lambda: False)
        except (ImportError, ValueError) as e:
            return {"skipped": str(e)}
    best_cpu = best_wall = float("inf")
    n = 0
    used = backend
    for _ in range(repeat):
        reader = VideoReader(source, info, threads=1, backend=backend)  # type: ignore[arg-type]
        out = np.empty((info.height, info.width, 3), np.uint8)
        cpu, wall = time.process_time(), time.perf_counter()
        n = sum(1 for frame in reader if frame.rgb(out=out) is out)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
        used = reader.backend_used
    return {
        "size": [info.height, info.width],
        "frames": n,
        "backend_used": used,
        "cpu_ms_per_frame": round(1e3 * best_cpu / n, 2),
        "wall_ms_per_frame": round(1e3 * best_wall / n, 2),
    }


def bench_clip(source: Path, max_side: int, repeat: int) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for backend in ("pyav", "torchcodec-cpu"):
        for label, side in (("full", None), (f"max_side_{max_side}", max_side)):
            runs[f"{backend}/{label}"] = measure(source, backend, side, repeat)
    base = runs["pyav/full"]["cpu_ms_per_frame"]
    ratios = {
        f"{key}_vs_pyav/full": round(run["cpu_ms_per_frame"] / base, 3)
        for key, run in runs.items()
        if "cpu_ms_per_frame" in run and key != "pyav/full"
    }
    return {"runs": runs, "cpu_ratio": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--frames", type=int, default=120, help="frames of the 1080p clip")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "max_side": args.max_side,
        "torchcodec": torchcodec_error() or "loads",
        "clips": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        clips = {"shared_720p_avi": SHARED_CLIP}
        clips["synthetic_1080p_mp4"] = synthetic_1080p(Path(tmp) / "1080p.mp4", args.frames)
        for name, path in clips.items():
            if path.exists():
                result["clips"][name] = bench_clip(path, args.max_side, args.repeat)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
