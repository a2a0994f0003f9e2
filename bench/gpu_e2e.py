"""End to end vs model only: one job of the in-process pipeline on a real clip, then the same
forwards alone.

The job runs through ``flows.inline.run_inline`` (decode, detect/track, Sapiens, Zarr writer in
one process, no Ray) with a released-size model. No released weights exist on a bare GPU
machine, and a job spec takes random weights for the ``tiny`` size only, so the groups the
Sapiens stage would load from checkpoints are built with random weights instead, in the shape
the released checkpoints have: one backbone group per task (:func:`random_released_groups`).
Everything else is the pipeline as it runs.

Each group's forward is timed (synchronised on CUDA) inside the job; afterwards the same
groups run the same number of full forwards on random crops, which is the model-only time.
Used by bench/gpu.py; importing this module imports the pipeline (PyAV, Zarr, Redis client,
kornia) but never Ray.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import actors.infer
from actors.decode import DecodeWorker
from actors.infer import ModelSpec, runtime_spec
from flows.inline import run_inline
from flows.plan import JobPlan, plan_job
from flows.spec import JobSpec
from models import build_model
from models.runtime import Predictor, RuntimeSpec

__all__ = ["E2EConfig", "TimedPredictor", "random_released_groups", "run_e2e"]

TASKS = ("pose", "seg", "depth", "normal")


class TimedPredictor(Predictor):
    """A :class:`Predictor` that counts its crops and calls and sums its forward time (the
    device synchronised before and after each call, so the time is the forward's own)."""

    def __init__(self, model: torch.nn.Module, spec: RuntimeSpec) -> None:
        super().__init__(model, spec)
        self.calls = 0
        self.crops = 0
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(
        self, images: torch.Tensor, tasks: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        self._sync()
        t0 = time.perf_counter()
        out = super().__call__(images, tasks)
        self._sync()
        self.seconds += time.perf_counter() - t0
        self.calls += math.ceil(images.shape[0] / self.spec.batch_size)
        self.crops += int(images.shape[0])
        return out


@contextlib.contextmanager
def random_released_groups(built: list[TimedPredictor]) -> Iterator[None]:
    """While open, the Sapiens stage builds random-weight groups shaped like the released
    checkpoints (one backbone group per task) instead of loading checkpoints; every group it
    builds is appended to ``built``."""

    def build(key: ModelSpec, tasks: tuple[str, ...], batch_size: int) -> list[Predictor]:
        runtime = runtime_spec(key, batch_size)
        torch.manual_seed(key.seed)
        groups = []
        for task in tasks:
            model = _random_group(task, key, runtime)
            groups.append(TimedPredictor(model, runtime))
        built.extend(groups)
        return list(groups)

    original = getattr(actors.infer, "build_groups", None)
    if original is None:
        raise RuntimeError("actors.infer has no build_groups: the Sapiens stage changed shape")
    actors.infer.build_groups = build  # type: ignore[assignment]
    try:
        yield
    finally:
        actors.infer.build_groups = original


def _random_group(task: str, key: ModelSpec, runtime: RuntimeSpec) -> torch.nn.Module:
    kw: dict[str, Any] = {"num_keypoints": key.num_keypoints, "device": runtime.device}
    try:  # built in place at the run dtype: a 2b group is never allocated in float32
        return build_model((task,), key.size, dtype=runtime.torch_dtype, **kw)
    except (RuntimeError, NotImplementedError):  # an init op without a kernel for that dtype
        return build_model((task,), key.size, **kw).to(runtime.torch_dtype)


@dataclass(frozen=True, slots=True, kw_only=True)
class E2EConfig:
    """One end-to-end measurement.

    Args:
        video: the clip.
        size: model size (``tiny`` for the CPU smoke run).
        device: ``cuda`` or ``cpu``.
        batch_size: crops per forward and frames per decoded batch.
        stride: every stride-th frame is analysed.
        persons: person boxes given per frame (the ``boxes`` detector).
        max_side: longer side of the dense maps (None: the source size).
        end_s: stop after this many seconds of video (None: the whole clip).
        tasks: the tasks of the job.
    """

    video: Path
    size: str = "0.3b"
    device: str = "cuda"
    batch_size: int = 8
    stride: int = 4
    persons: int = 6
    max_side: int | None = None
    end_s: float | None = None
    tasks: tuple[str, ...] = TASKS
    extra: dict[str, Any] = field(default_factory=dict)


def person_boxes(
    width: int, height: int, frames: int, persons: int
) -> dict[str, list[list[float]]]:
    """``persons`` person-shaped boxes per source frame, spread across the frame in two rows
    and drifting sideways a few pixels per frame (so the tracker follows moving people)."""
    h = 0.4 * height
    w = 0.4 * h
    out: dict[str, list[list[float]]] = {}
    span = max(1.0, width - w)
    for i in range(frames):
        boxes = []
        for p in range(persons):
            x1 = ((p + 0.5) / persons * span + 3.0 * i * (1 if p % 2 else -1)) % span
            y1 = (0.1 if p % 2 else 0.45) * height
            boxes.append([round(x1, 1), round(y1, 1), round(x1 + w, 1), round(y1 + h, 1)])
        out[str(i)] = boxes
    return out


def _spec(cfg: E2EConfig, root: Path, job_id: str, boxes: dict, end_s: float | None) -> JobSpec:
    sampling: dict[str, Any] = {"stride": cfg.stride}
    if end_s is not None:
        sampling["end_s"] = end_s
    return JobSpec.from_dict(
        {
            "source": str(cfg.video),
            "job_id": job_id,
            "tasks": list(cfg.tasks),
            "output_root": str(root),
            "model": {"size": cfg.size},
            "detector": "boxes",
            "boxes": boxes,
            "sampling": sampling,
            "max_side": cfg.max_side,
            "batch_size": cfg.batch_size,
        }
    )


def _probe(cfg: E2EConfig, root: Path) -> tuple[int, int, int, float]:
    """(width, height, frames, fps) of the clip, frames from duration x fps (the container's
    frame count is not trusted), with margin."""
    plan = plan_job(_spec(cfg, root, "gpu-probe", {"0": []}, None), device=cfg.device)
    info = DecodeWorker(plan.decode).probe(str(cfg.video))
    frames = 0
    if info.duration_s and info.fps:
        frames = math.ceil(info.duration_s * info.fps)
    frames = max(frames, info.frame_count_hint or 0, 1)
    return info.width, info.height, frames + 16, info.fps or 25.0


class PeakRSS(threading.Thread):
    """Peak resident memory of this process, sampled every 0.1 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self._halt = _rss(), threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _rss())
            self._halt.wait(0.1)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, _rss())


def _rss() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def _run_job(plan: JobPlan) -> tuple[Any, list[TimedPredictor], float]:
    built: list[TimedPredictor] = []
    with random_released_groups(built):
        t0 = time.perf_counter()
        outcome = run_inline(plan)
        wall = time.perf_counter() - t0
    if not built:
        raise RuntimeError("the Sapiens stage did not build its groups through build_groups")
    if outcome.state != "succeeded":
        raise RuntimeError(f"job {plan.spec.job_id} ended {outcome.state}: {outcome.error}")
    return outcome, built, wall


def release(groups: list[TimedPredictor]) -> None:
    """Free the groups' device memory. The job's Sapiens stage outlives ``run_inline`` (its
    batcher thread keeps the groups referenced), so the weights are moved to the meta device
    instead of waiting for the collector: later measurements then start from an empty device."""
    for g in groups:
        g.model.to("meta")
    if groups and groups[0].device.type == "cuda":
        torch.cuda.empty_cache()


def model_only_seconds(
    groups: list[TimedPredictor], forwards: int, crop_hw: tuple[int, int]
) -> float:
    """Seconds for ``forwards`` full batches through every group, on random crops."""
    dev = groups[0].device
    bs = groups[0].spec.batch_size
    x = torch.randn(bs, 3, *crop_hw, device=dev)
    for g in groups:  # one warm call per group (kernels chosen, memory pools grown)
        g(x)
    for g in groups:
        g.seconds, g.calls, g.crops = 0.0, 0, 0
    t0 = time.perf_counter()
    for _ in range(forwards):
        for g in groups:
            g(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def run_e2e(cfg: E2EConfig) -> dict[str, Any]:
    """One warm-up job (a few frames), the measured job, then the model-only loop."""
    root = Path(tempfile.mkdtemp(prefix="sapiens-gpu-e2e-"))
    cuda = cfg.device.startswith("cuda")
    try:
        width, height, frames, fps = _probe(cfg, root)
        boxes = person_boxes(width, height, frames, cfg.persons)
        # Warm-up: the first frames through a job of their own (CUDA context, kernels, codecs).
        warm_end = min(cfg.end_s or 1e9, (2 * cfg.stride + 1) / fps)
        t0 = time.perf_counter()
        warm = plan_job(_spec(cfg, root, "gpu-warm", boxes, warm_end), device=cfg.device)
        _, warm_groups, _ = _run_job(warm)
        warm_s = time.perf_counter() - t0
        release(warm_groups)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        plan = plan_job(_spec(cfg, root, "gpu-e2e", boxes, cfg.end_s), device=cfg.device)
        rss = PeakRSS()
        rss.start()
        try:
            outcome, groups, wall = _run_job(plan)
        finally:
            peak_rss = rss.stop()
        peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        store_bytes = _dir_bytes(Path(plan.store_url))
        crops = groups[0].crops
        forwards = groups[0].calls
        in_job_model_s = sum(g.seconds for g in groups)
        crop_hw = plan.infer.resolved_crop_size
        model_s = model_only_seconds(groups, forwards, crop_hw)
        release(groups)
        stages = {k: v for k, v in outcome.seconds.items() if k != "total"}
        loop_s = sum(stages.values())
        frames_done = outcome.frames
        return {
            "frames": frames_done,
            "crops": crops,
            "forwards_per_group": forwards,
            "groups": len(groups),
            "layout": "released (one random-weight backbone group per task)",
            "size": cfg.size,
            "tasks": list(cfg.tasks),
            "device": cfg.device,
            "dtype": str(groups[0].dtype),
            "batch_size": cfg.batch_size,
            "crop_hw": list(crop_hw),
            "stride": cfg.stride,
            "end_s": cfg.end_s,
            "max_side": cfg.max_side,
            "source_hw": [height, width],
            "detector": "boxes",
            "detector_why": (
                f"{cfg.persons} person-sized boxes per frame, given with the job and drifting "
                "3 px per frame: RT-DETR weights cannot be fetched on the GPU machine, and "
                "full-frame gives one crop per frame where the clip shows 30-40 people"
            ),
            "persons_per_frame": cfg.persons,
            "warmup_job_s": warm_s,
            "wall_s": wall,
            "outside_loop_s": outcome.seconds.get("total", wall) - loop_s,
            "stage_s": stages,
            "frames_per_s": frames_done / wall,
            "frames_per_s_steady": frames_done / loop_s if loop_s else None,
            "model_in_job_s": in_job_model_s,
            "model_only_s": model_s,
            "model_only_frames_per_s": frames_done / model_s if model_s else None,
            "model_only_vs_e2e": model_s / wall,
            "model_only_vs_e2e_steady": model_s / loop_s if loop_s else None,
            "peak_gpu_mem_gib": peak_gpu,
            "peak_rss_mib": peak_rss / 2**20,
            "store_mib": store_bytes / 2**20,
            "notes": (
                "wall_s is run_inline from start to end; outside_loop_s is its part outside "
                "the stage loop (probe, model build, store creation, and finalize, which "
                "writes the last partial block); frames_per_s_steady divides by the stage "
                "loop only; stage_s.write counts the blocks committed inside the loop. "
                "model_in_job_s is the synchronised forward time inside the job; "
                "model_only_s runs the same number of full forwards on random crops. "
                "model_only_vs_e2e is the fraction of the job the model alone would take "
                "(1.0: the pipeline keeps up with the model)."
            ),
            **cfg.extra,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
