"""How bench/gpu.py measures: timed calls, device memory, the model groups it builds and the
rate fields of a row (crops/s, TFLOP/s, MFU)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from bench._gpu_run import Clock, _dtype, _is_oom
from bench.models import build_layout, heads_of
from bench.models import count_layout_flops as _count_layout_flops
from bench.models import count_trunk_flops as _count_trunk_flops
from models.spec import INPUT_SIZE

TASKS = ("pose", "seg", "depth", "normal")


#: FLOPs per crop by (tasks, size, hw, layout): counted once per run on the meta device.
count_layout_flops = functools.lru_cache(maxsize=None)(_count_layout_flops)
count_trunk_flops = functools.lru_cache(maxsize=None)(_count_trunk_flops)


# -- timing --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    target_s: float,
    max_iters: int,
    clock: Clock,
    min_iters: int = 2,
) -> tuple[float, int]:
    """(seconds per call, calls timed): ``warmup`` calls, one probe call that sizes the run to
    about ``target_s`` (never more than half the time left), then the timed calls, measured
    with CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = max(time.perf_counter() - t0, 1e-6)
    n = int(min(max_iters, max(min_iters, target_s / first)))
    n = max(1, min(n, int(max(0.0, clock.left()) * 0.5 / first)))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / n, n
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n, n


def _mem_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _mem_peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _mem_now(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _build(
    size: str, layout: str, device: torch.device, hw: tuple[int, int] = INPUT_SIZE
) -> list[torch.nn.Module]:
    """The layout's groups of ``size`` (a Sapiens size or ``sapiens2-<size>``, whose heads
    serve the tasks: depth is its pointmap's), built for ``hw`` inputs."""
    dtype = _dtype(device)
    heads = heads_of(size, TASKS)
    try:  # in place at the run dtype: a 2b group is never allocated in float32
        groups = build_layout(heads, size, layout, device=device, dtype=dtype, hw=hw)
    except (RuntimeError, NotImplementedError) as e:
        if _is_oom(e):
            raise
        built = build_layout(heads, size, layout, device=device, hw=hw)
        groups = [g.to(dtype) for g in built]
    return [g.eval() for g in groups]


def _rate_fields(
    flops_per_crop: int, batch: int, seconds: float, peak: float | None, device: torch.device
) -> dict[str, Any]:
    achieved = flops_per_crop * batch / seconds
    row: dict[str, Any] = {
        "ms_per_batch": seconds * 1e3,
        "crops_per_s": batch / seconds,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak is None else achieved / peak,
        "peak_mem_gib": _mem_peak(device),
    }
    if device.type != "cuda":
        row["cuda_only"] = "skipped: no CUDA device (mfu and peak memory need one)"
    elif peak is None:
        row["cuda_only"] = "mfu skipped: device not in bench.models.PEAK_BF16"
    return row


def _short(row: dict[str, Any]) -> str:
    keys = ("size", "layout", "mode", "batch", "ms_per_batch", "crops_per_s", "mfu", "status")
    parts = []
    for k in keys:
        if k in row:
            v = row[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)
