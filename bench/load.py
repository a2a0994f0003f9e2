"""Many small jobs at once through one ``JobService``: throughput, latency, fairness, memory.

The scenario (also run by tests/load/test_load.py): a short synthetic clip (a bright rectangle
moving over a dark background, written with PyAV), ``--jobs`` jobs on it submitted at once to
one warm, idle service (``--warmup-jobs`` jobs run to the end first, so its actors are up)
running ``--max-jobs`` of them at a time on a local Ray cluster, the ``tiny``
model, the full-frame detector. While the jobs run, the resident memory of this process and of every
process it started (Ray's GCS, raylet and workers, the embedded Redis-compatible server) is
sampled from /proc. Prints one JSON object:

* ``jobs_per_s``, ``frames_per_s``: over the span first submit -> last success;
* ``latency_s``: submit -> succeeded per job (p50, p95, mean, max); ``run_s``: start ->
  succeeded; ``queue_wait_s``: submit -> start; ``start_latency_s``: start (claimed) -> the
  job is running (bound to its pooled stages, its source probed, its store created);
* ``start_order_max_displacement``: how far (in jobs) the start order strays from the submit
  order (FIFO gives at most ``max_jobs``);
* ``memory_mib``: peak RSS while the first and while the last 10 jobs finished, per process
  group, and the growth between the two.

    python bench/load.py --out bench/results/load-cpu.json     # 50 jobs, 4 at a time, CPU
    python bench/load.py --jobs 100 --max-jobs 8
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = [
    "LoadScenario",
    "MemorySampler",
    "make_clip",
    "per_job",
    "process_groups_rss",
    "run_load",
    "summarize",
]

MIB = 2**20


# -- input ----------------------------------------------------------------------------------------
def make_clip(path: Path, *, width: int = 64, height: int = 48, frames: int = 8) -> Path:
    """Write a ``frames``-frame clip of a bright rectangle moving over a dark background."""
    import av
    import numpy as np

    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(12, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), 16, np.uint8)
            x = (i * 4) % max(1, width - 16)
            img[height // 4 : 3 * height // 4, x : x + 16] = (235, 220, 200)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# -- memory ---------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


_RAY_CORE = (
    b"gcs_server",
    b"raylet",
    b"ray::DashboardAgent",
    b"ray::RuntimeEnvAgent",
    b"dashboard",
    b"log_monitor",
    b"monitor.py",
    b"runtime_env",
)


def _group(pid: int) -> str | None:
    """What kind of process ``pid`` is, or None if it is gone:

    * ``sapiens``: the shared Sapiens actor (lives as long as the service);
    * ``ray_core``: GCS, raylet and Ray's agents (live as long as the cluster);
    * ``ray_workers``: every other Ray worker (the per-job stage actors, idle workers);
    * ``redis``: the embedded server; ``other``: anything else.
    """
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    if b"SapiensWorker" in cmd:
        return "sapiens"
    if any(name in cmd for name in _RAY_CORE):
        return "ray_core"
    if b"ray::" in cmd or b"default_worker.py" in cmd or b"setup_worker.py" in cmd:
        return "ray_workers"
    if b"valkey" in cmd or b"redis" in cmd:
        return "redis"
    return "other"


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def process_groups_rss(root_pid: int | None = None) -> dict[str, int]:
    """Resident bytes of ``root_pid`` (default: this process) as ``driver`` and of all its
    descendants grouped by :func:`_group`, plus ``total``."""
    root_pid = root_pid or os.getpid()
    tree = _children()
    out = dict.fromkeys(("sapiens", "ray_core", "ray_workers", "redis", "other"), 0)
    out["driver"] = _rss(root_pid)
    stack = list(tree.get(root_pid, []))
    while stack:
        pid = stack.pop()
        stack.extend(tree.get(pid, []))
        group = _group(pid)
        if group is not None:
            out[group] += _rss(pid)
    out["total"] = sum(out.values())
    return out


class MemorySampler(threading.Thread):
    """Samples :func:`process_groups_rss` every ``interval_s`` into ``samples`` (time, dict)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), process_groups_rss()))
            self._halt.wait(self.interval_s)

    def stop(self) -> list[tuple[float, dict[str, int]]]:
        self._halt.set()
        self.join()
        return self.samples

    def peak(self, t0: float, t1: float) -> dict[str, int]:
        """Per-group peak over the samples taken in [t0, t1] (the nearest one if none)."""
        window = [s for t, s in self.samples if t0 <= t <= t1]
        if not window and self.samples:
            window = [min(self.samples, key=lambda ts: abs(ts[0] - t1))[1]]
        keys = window[0].keys() if window else ()
        return {k: max(s[k] for s in window) for k in keys}


# -- scenario -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class LoadScenario:
    """Settings of one load run."""

    jobs: int = 50
    max_jobs: int = 4
    frames: int = 8
    batch_size: int = 4
    tasks: tuple[str, ...] = ("pose", "seg", "depth", "normal")
    timeout_s: float = 600.0
    window: int = 10  # jobs at the start and at the end compared for memory growth
    warmup_jobs: int = 1  # run (and finished) before the burst: the service is warm
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self, clip: Path, root: Path, job_id: str) -> dict[str, Any]:
        return {
            "source": str(clip),
            "job_id": job_id,
            "output_root": str(root),
            "model": {"size": "tiny"},
            "tasks": list(self.tasks),
            "detector": "full-frame",
            "batch_size": self.batch_size,
            **self.extra,
        }


def _serve_in_background(coord: Any, **options: Any) -> tuple[Any, Callable[[], None]]:
    from flows.service import JobService

    stop = threading.Event()
    service = JobService(coord, **options)
    thread = threading.Thread(
        target=service.serve, kwargs={"until": stop.is_set}, daemon=True, name="load-serve"
    )
    thread.start()

    def halt(timeout_s: float = 60.0) -> None:
        stop.set()
        thread.join(timeout=timeout_s)  # a job stuck in set-up never returns: bounded wait

    return service, halt


def run_load(coord: Any, root: Path, clip: Path, scenario: LoadScenario) -> dict[str, Any]:
    """Submit ``scenario.jobs`` jobs at once to a fresh ``JobService`` on ``coord`` and wait
    for all of them; returns the raw per-job facts and the memory samples (see
    :func:`summarize`). Ray must already be initialised (or ``ensure_ray`` starts it)."""
    from flows.pool import ScalePolicy
    from storage import TERMINAL_STATES

    ids = [f"load-{i:03d}" for i in range(scenario.jobs)]
    sampler = MemorySampler()
    sampler.start()
    finished: dict[str, float] = {}  # job id -> wall time its terminal state was seen
    service, halt = _serve_in_background(
        coord,
        max_jobs=scenario.max_jobs,
        worker_id="load-serve",
        device="cpu",
        policy=ScalePolicy(actor_gpus=0),
    )
    try:
        # The service is up and idle (first pool sizing done: no Sapiens actor while nothing
        # is queued), then the whole burst arrives: what a long-running `serve` sees.
        up = time.monotonic() + 60
        while not coord.worker_alive("load-serve") and time.monotonic() < up:
            time.sleep(0.1)
        service.stages.wait_warm()  # its pooled stage actors are up
        # A warm service has run a job before: its Sapiens actor for the model is up (with
        # no warm-up job, the burst's first job waits for that actor to start).
        warm = [f"warmup-{i}" for i in range(scenario.warmup_jobs)]
        for job_id in warm:
            coord.submit(scenario.spec(clip, root, job_id), job_id=job_id)
        while any(coord.get(j).state not in TERMINAL_STATES for j in warm):
            if time.monotonic() > up + scenario.timeout_s:
                raise RuntimeError("the warm-up jobs did not finish")
            time.sleep(0.2)
        time.sleep(1.0)
        t_submit = time.time()
        for job_id in ids:
            coord.submit(scenario.spec(clip, root, job_id), job_id=job_id)
        deadline = time.monotonic() + scenario.timeout_s
        while len(finished) < len(ids):
            for job_id in ids:
                if job_id not in finished and coord.get(job_id).state in TERMINAL_STATES:
                    finished[job_id] = time.time()
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        t_done = time.time()
    finally:
        halt(60.0 if len(finished) == len(ids) else 2.0)
        sampler.stop()
    from storage import open_result

    records, events = {}, {}
    for job_id in ids:
        records[job_id] = coord.get(job_id)
        events[job_id] = {e.type: e.time_ms / 1000 for e in coord.events(job_id, count=1000)}
        store = (records[job_id].result or {}).get("store") if records[job_id].result else None
        if store:  # the job started running when its store was created
            events[job_id]["store_created"] = float(open_result(store).attrs["created_at"])
    return {
        "ids": ids,
        "records": records,
        "events": events,
        "finished": finished,
        "sampler": sampler,
        "t_submit": t_submit,
        "t_done": t_done,
        "pool_created": service.pool.created,
        "stages_created": service.stages.created,
        "scenario": scenario,
    }


def _pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": _pct(values, 0.5),
        "p95": _pct(values, 0.95),
        "mean": statistics.fmean(values),
        "max": max(values),
        "min": min(values),
    }


def per_job(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Each job in submit order: state, frames and the server times (s) it was submitted,
    started and succeeded at (None where it did not happen)."""
    out = []
    for job_id in raw["ids"]:
        rec, ev = raw["records"][job_id], raw["events"][job_id]
        out.append(
            {
                "job_id": job_id,
                "state": rec.state,
                "frames": rec.committed_frames,
                "submitted": ev.get("submitted", rec.created_ms / 1000),
                "started": ev.get("started"),
                "store_created": ev.get("store_created"),
                "succeeded": ev.get("succeeded"),
            }
        )
    return out


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Throughput, latency, fairness and memory figures of a :func:`run_load` result."""
    scenario: LoadScenario = raw["scenario"]
    jobs = per_job(raw)
    done = [j for j in jobs if j["state"] == "succeeded" and j["succeeded"] is not None]
    started = [j for j in jobs if j["started"] is not None]
    latency = [j["succeeded"] - j["submitted"] for j in done]
    run = [j["succeeded"] - j["started"] for j in done if j["started"] is not None]
    wait = [j["started"] - j["submitted"] for j in started]
    # Claimed -> bound to its stages, source probed and store open: the job is running.
    start = [j["store_created"] - j["started"] for j in done if j["store_created"] and j["started"]]
    # Start order vs submit order: rank of each job's start time (ties share the lower rank).
    start_times = sorted(j["started"] for j in started)
    displacement = max(
        (abs(start_times.index(j["started"]) - i) for i, j in enumerate(jobs) if j["started"]),
        default=0,
    )
    # Pairs started against the submit order by more than the max_jobs slack.
    inversions = sum(
        1
        for i, a in enumerate(jobs)
        for b in jobs[i + scenario.max_jobs + 1 :]
        if a["started"] is not None and b["started"] is not None and b["started"] < a["started"]
    )
    first_submit = min(j["submitted"] for j in jobs)
    span = max(j["succeeded"] for j in done) - first_submit if done else float("nan")
    frames = sum(j["frames"] for j in done)
    # Memory: peak while the first `window` jobs finished vs while the last `window` did.
    order = sorted(raw["finished"].values())
    w = min(scenario.window, len(order))
    sampler: MemorySampler = raw["sampler"]
    first = sampler.peak(raw["t_submit"], order[w - 1]) if order else {}
    last = sampler.peak(order[-w], order[-1]) if order else {}
    memory = {
        "first_jobs": {k: v / MIB for k, v in first.items()},
        "last_jobs": {k: v / MIB for k, v in last.items()},
        "growth": {k: (last[k] - first[k]) / MIB for k in first},
        "peak_total": max((s["total"] for _, s in sampler.samples), default=0) / MIB,
        "samples": len(sampler.samples),
    }
    return {
        "bench": "load",
        "jobs": len(jobs),
        "succeeded": len(done),
        "states": dict(sorted(Counter(j["state"] for j in jobs).items())),
        "max_jobs": scenario.max_jobs,
        "frames_per_job": scenario.frames,
        "warmup_jobs": scenario.warmup_jobs,
        "frames": frames,
        "batch_size": scenario.batch_size,
        "model": "tiny",
        "cpus": os.cpu_count(),
        "wall_s": span,
        "jobs_per_s": len(done) / span if span else 0.0,
        "frames_per_s": frames / span if span else 0.0,
        "latency_s": _stats(latency),
        "run_s": _stats(run),
        "start_latency_s": _stats(start),
        "queue_wait_s": _stats(wait),
        "start_order_max_displacement": displacement,
        "start_order_inversions_beyond_slack": inversions,
        "sapiens_actors_created": raw["pool_created"],
        "stage_actors_created": raw["stages_created"],
        "memory_mib": memory,
    }


def _drop_keys(client: Any, prefix: str, redis_url: str | None) -> None:
    if redis_url:  # a shared server: remove this run's keys (the embedded one goes away)
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--max-jobs", type=int, default=4)
    p.add_argument("--frames", type=int, default=8, help="frames of the synthetic clip")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs of the Ray cluster (default: what max-jobs jobs need at once: "
        "1.25 per job for decode, persons and writer, plus 1 for the shared Sapiens actor)",
    )
    p.add_argument(
        "--warmup-jobs",
        type=int,
        default=1,
        help="jobs run to the end before the burst (0: the burst meets a service that has "
        "never run a job, and its first job waits for the Sapiens actor to start)",
    )
    p.add_argument("--timeout-s", type=float, default=900.0, help="give up after this long")
    p.add_argument("--redis-url", default=None, help="default: the embedded server")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    num_cpus = args.num_cpus or math.ceil(1 + 1.25 * args.max_jobs)

    import ray

    from storage import Coordinator, CoordinatorConfig, connect

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    ray.init(
        address="local",  # a private cluster, never one that `ray start` left running
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=200 * MIB,
        log_to_driver=False,
    )
    conn = connect(args.redis_url, root=tmp / "root")
    prefix = f"bench-load-{os.getpid()}"  # a shared Redis may hold other jobs and queues
    try:
        coord = Coordinator(conn.client, CoordinatorConfig(prefix=prefix))
        clip = make_clip(tmp / "clip.mp4", frames=args.frames)
        scenario = LoadScenario(
            jobs=args.jobs,
            max_jobs=args.max_jobs,
            frames=args.frames,
            batch_size=args.batch_size,
            timeout_s=args.timeout_s,
            warmup_jobs=args.warmup_jobs,
        )
        result = summarize(run_load(coord, tmp / "out", clip, scenario))
        result["ray_num_cpus"] = num_cpus
        text = json.dumps(result, indent=2)
        print(text, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        if result["succeeded"] < result["jobs"]:
            # Jobs still running here are blocked inside Ray calls that never return: leave at
            # once (the cluster's processes share this process's fate) instead of hanging.
            _drop_keys(conn.client, prefix, args.redis_url)
            conn.close()
            shutil.rmtree(tmp, ignore_errors=True)
            os._exit(1)
    finally:
        _drop_keys(conn.client, prefix, args.redis_url)
        conn.close()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
