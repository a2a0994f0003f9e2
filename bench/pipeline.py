"""End-to-end pipeline throughput on Ray vs the same stages in one process without Ray.

Prints one JSON object: frames/s of both, their ratio (goal >= 0.7 on a CPU machine), the
one-process run's per-stage busy fractions and the peak resident memory of the Ray run (driver
plus every Ray worker process, sampled every 0.2 s).

Then ``--shared-jobs`` jobs with 0-3 given persons per frame run at once on one shared Sapiens
actor, twice: with cross-call dynamic batching (the default actor) and with calls run one by
one (each call's crops padded to full forwards on their own). Reported: frames/s of all jobs,
forwards run and the mean share of each forward holding real crops.

    python bench/pipeline.py                         # shared clip, tiny model, CPU
    python bench/pipeline.py --video my.mp4 --stride 2 --max-side 480   # smaller maps
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from flows.inline import run_inline
from flows.plan import plan_job
from flows.pool import InferPool
from flows.raylocal import object_store_bytes
from flows.run import ensure_ray, run_on_ray
from flows.spec import JobSpec

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "people_walking_720p.avi"


def _rss_bytes() -> int:
    """Resident memory of this process and every Ray process of this user."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if int(pid) != os.getpid() and b"ray" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


class PeakRSS(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._halt = 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.2)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--video", type=Path, default=CLIP)
    p.add_argument("--stride", type=int, default=20)
    p.add_argument(
        "--max-side", type=int, default=None, help="downscale the dense maps (default: none)"
    )
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--model", default="tiny")
    p.add_argument("--shared-jobs", type=int, default=3)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:

        def spec(job_id: str) -> JobSpec:
            return JobSpec.from_dict(
                {
                    "source": str(args.video),
                    "job_id": job_id,
                    "output_root": str(root),
                    "model": {"size": args.model},
                    "sampling": {"stride": args.stride},
                    "max_side": args.max_side,
                    "batch_size": args.batch_size,
                }
            )

        inline = run_inline(plan_job(spec("inline")))
        # The object store a `run` of this job gets (several jobs' batches in flight below).
        batch = plan_job(spec("sizing")).batch_bytes()
        ensure_ray(store_bytes=object_store_bytes(batch, 4 * max(1, args.shared_jobs)))
        run_on_ray(plan_job(spec("warmup")), retries=0)  # actor start-up, imports
        sampler = PeakRSS()
        sampler.start()
        t0 = time.perf_counter()
        ray_out = run_on_ray(plan_job(spec("ray")), retries=0)
        ray_s = time.perf_counter() - t0
        peak = sampler.stop()
        shared = {
            mode: _shared_actor_run(args, root, spec, concurrency)
            for mode, concurrency in (("one_call_at_a_time", 1), ("dynamic_batching", 8))
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    busy = {k: v for k, v in inline.seconds.items() if k != "total"}
    result = {
        "bench": "pipeline",
        "video": args.video.name,
        "frames": ray_out.frames,
        "model": args.model,
        "stride": args.stride,
        "max_side": args.max_side,
        "cpus": os.cpu_count(),
        "inline_frames_per_s": inline.frames / inline.seconds["total"],
        "ray_frames_per_s": ray_out.frames / ray_s,
        "ratio_ray_vs_inline": (ray_out.frames / ray_s) / (inline.frames / inline.seconds["total"]),
        "inline_busy_fraction": {k: v / inline.seconds["total"] for k, v in busy.items()},
        "ray_peak_rss_mib": peak / 2**20,
        "shared_actor": shared,
        "ratio_batching_vs_one_call_at_a_time": shared["dynamic_batching"]["frames_per_s"]
        / shared["one_call_at_a_time"]["frames_per_s"],
    }
    print(json.dumps(result, indent=2))
    return result


def _shared_actor_run(args, root: Path, spec, concurrency: int) -> dict[str, float]:
    """``args.shared_jobs`` jobs at once on one shared Sapiens actor; 0-3 persons per frame."""
    rng = np.random.default_rng(0)
    boxes = {}
    for i in range(0, 341, args.stride):
        n = int(rng.integers(0, 4))
        x = rng.uniform(0, 900, n)
        boxes[str(i)] = [[float(a), 40.0, float(a) + 300, 700.0] for a in x]
    pool = InferPool(concurrency=concurrency)
    plans = []
    for j in range(args.shared_jobs):
        raw = spec(f"shared-{concurrency}-{j}").to_dict()
        raw.update({"detector": "boxes", "boxes": boxes})
        plans.append(plan_job(JobSpec.from_dict(raw)))
    run_on_ray(plan_job(JobSpec.from_dict({**raw, "job_id": f"warm-{concurrency}"})), pool=pool)
    (before,) = pool.poll_stats()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(plans)) as ex:
        outs = list(ex.map(lambda plan: run_on_ray(plan, pool=pool, retries=0), plans))
    wall = time.perf_counter() - t0
    (after,) = pool.poll_stats()
    pool.shutdown()
    failed = [o.error for o in outs if o.state != "succeeded"]
    if failed:
        raise RuntimeError(f"shared-actor jobs failed: {failed}")
    forwards = after["forwards"] - before["forwards"]
    return {
        "jobs": len(plans),
        "frames_per_s": sum(o.frames for o in outs) / wall,
        "forwards": forwards,
        "fill": (after["crops"] - before["crops"]) / max(1, after["slots"] - before["slots"]),
        "mixed_forwards": after["mixed_forwards"] - before["mixed_forwards"],
    }


if __name__ == "__main__":
    main()
