"""Every GPU measurement in one run, under a global deadline, results written as they come.

Sections, cheapest and most important first:

1. ``mfu``: crops/s, ms per batch, achieved TFLOP/s, model FLOPs utilisation against the
   device's dense bf16 peak (``bench.models.PEAK_BF16``) and peak memory, per size at batch
   sizes 1 and 8, for two layouts: ``released`` (one backbone group per task, as the released
   checkpoints run: four backbones for pose, seg, depth and normal) and ``shared`` (one
   backbone, four heads). bf16 on CUDA, 1024x768 crops, random weights; FLOPs counted with
   FlopCounterMode on the meta device.
2. ``e2e``: one job of the in-process pipeline (``flows.inline.run_inline``: decode,
   detect/track, Sapiens, Zarr writer) on the shared clip with a 0.3b model in the released
   layout, against the same forwards run alone (bench/gpu_e2e.py).
3. ``compile``: eager vs ``torch.compile`` (default mode, as ``RuntimeSpec(compile=True)``
   runs it) vs ``mode="reduce-overhead"`` (CUDA graphs) vs a manual ``torch.cuda.CUDAGraph``
   capture of the eager forward, with compile wall time apart. A compile starts only when its
   estimated time fits before the deadline (less ``--late-reserve-s`` kept for the last
   section); otherwise its row says ``skipped: deadline``.
4. ``mfu_late``: the ``mfu`` rows at batch 32 (0.3b to 1b), last because their depth-head
   activations pass 2**31 elements, where a kernel is likeliest to fail and take the CUDA
   context with it.
5. ``trunk``: per size, ``released`` vs a ``models.trunk`` trunk at k = L/2 (``--trunk-k``) vs
   ``shared`` (k = L), FLOPs and crops/s as ratios to released, the three timed in alternating
   rounds (``bench.models.TRUNK_METHOD``); in ``models-<tag>.json`` under ``trunk``. Last, so
   the deadline skips it first.

Each section is guarded (a failure is recorded and the next one runs), each measurement
checks the deadline (``--deadline-s``, 420 s counted from bench/gpu.sh's start) before it
starts, and a watchdog stops the run ``--grace-s`` after it.

Results: ``run-<tag>.json`` (environment, each section's status and seconds),
``models-<tag>.json``, ``e2e-<tag>.json`` and ``compile-<tag>.json`` in ``--results-dir`` and,
when the environment variable OUT names a directory, copied there too; every file is rewritten
after each measurement, so a run killed at any point keeps what it finished. ``<tag>`` is
``gpu``, or ``smoke`` for ``--smoke``: the tiny model at tiny sizes on the CPU, a few seconds,
which runs every code path except the CUDA-only ones (those rows give the reason instead).

    bash bench/gpu.sh                    # on a GPU machine (installs .whl/ wheels if needed)
    python bench/gpu.py --smoke          # on any CPU
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.models import (  # noqa: E402
    TRUNK_LAYOUTS,
    TRUNK_METHOD,
    build_layout,
    build_trunk_model,
    depth_of,
    heads_of,
    peak_entry,
)
from bench.models import count_layout_flops as _count_layout_flops  # noqa: E402
from bench.models import count_trunk_flops as _count_trunk_flops  # noqa: E402
from models.spec import ARCHES, INPUT_SIZE  # noqa: E402

TASKS = ("pose", "seg", "depth", "normal")
#: Sapiens2 sizes measured after the Sapiens ones (their heads serve TASKS: depth is the
#: pointmap's); the deadline skips them first.
SAPIENS2_SIZES = ("sapiens2-0.4b", "sapiens2-1b")
CLIP_NAME = "people_walking_720p.avi"
SMOKE_RESULTS = Path(os.environ.get("TMPDIR", "/tmp")) / "sapiens-stream-gpu-smoke"
#: First guesses of torch.compile wall time (s) on a GPU machine, before one was measured.
COMPILE_GUESS_S = {"tiny": 20.0, "0.3b": 80.0, "0.6b": 110.0, "1b": 130.0, "2b": 160.0}


#: FLOPs per crop by (tasks, size, hw, layout): counted once per run on the meta device.
count_layout_flops = functools.lru_cache(maxsize=None)(_count_layout_flops)
count_trunk_flops = functools.lru_cache(maxsize=None)(_count_trunk_flops)


# -- bookkeeping ---------------------------------------------------------------------------------


class Clock:
    """Seconds since the run started (the shell's start when it passes GPU_BENCH_T0)."""

    def __init__(self, deadline_s: float) -> None:
        t0 = os.environ.get("GPU_BENCH_T0")
        already = max(0.0, time.time() - float(t0)) if t0 else 0.0
        self.start = time.perf_counter() - already
        self.deadline_s = deadline_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self, until: float | None = None) -> float:
        return (self.deadline_s if until is None else until) - self.elapsed()


class Results:
    """The JSON files of the run, rewritten atomically after each change (and copied to $OUT)."""

    def __init__(self, out_dir: Path, tag: str, env: dict[str, Any]) -> None:
        self.dirs = [out_dir]
        if os.environ.get("OUT"):
            self.dirs.append(Path(os.environ["OUT"]))
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        self.tag, self.env = tag, env
        self.docs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def doc(self, name: str) -> dict[str, Any]:
        return self.docs.setdefault(name, {"bench": name, "env": self.env})

    def save(self, name: str) -> None:
        with self._lock:
            text = json.dumps(self.docs[name], indent=2, default=str) + "\n"
            for d in self.dirs:
                path = d / f"{name}-{self.tag}.json"
                tmp = path.with_suffix(".json.tmp")
                try:
                    tmp.write_text(text)
                    os.replace(tmp, path)
                except OSError as e:  # a full or read-only $OUT must not stop the run
                    print(f"[gpu] cannot write {path}: {e}", flush=True)

    def save_all(self) -> None:
        for name in list(self.docs):
            self.save(name)


def log(msg: str, clock: Clock | None = None) -> None:
    stamp = f"{clock.elapsed():6.1f}s " if clock else ""
    print(f"[gpu] {stamp}{msg}", flush=True)


def _error_text(e: BaseException) -> str:
    last = traceback.format_exception_only(type(e), e)[-1].strip()
    return last[:500]


_OOM: type[BaseException] = getattr(
    torch, "OutOfMemoryError", getattr(torch.cuda, "OutOfMemoryError", MemoryError)
)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, _OOM) or "out of memory" in str(e).lower()


# -- environment ---------------------------------------------------------------------------------


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": os.environ.get("GPU_BENCH_CMD") or " ".join([sys.executable, *sys.argv]),
        "argv": sys.argv,
        "smoke": args.smoke,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "device": str(device),
        "dtype": str(_dtype(device)),
        "deadline_s": args.deadline_s,
        "peak_bf16": None,
    }
    # torch.compile's GPU kernels go through Triton, which builds its launcher with a C compiler
    env["c_compiler"] = shutil.which("gcc") or shutil.which("cc")
    with contextlib.suppress(Exception):
        import triton

        env["triton"] = triton.__version__
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        entry = peak_entry(name)
        env["gpu"] = name
        env["peak_bf16"] = None if entry is None else {"key": entry[0], "flops": entry[1]}
        extras: dict[str, Callable[[], object]] = {
            "capability": lambda: list(torch.cuda.get_device_capability(device)),
            "sm_count": lambda: torch.cuda.get_device_properties(device).multi_processor_count,
            "gpu_memory_gib": lambda: torch.cuda.get_device_properties(device).total_memory / 2**30,
            "cudnn": torch.backends.cudnn.version,
            "sdpa_enabled": lambda: {
                k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
                for k in ("flash", "mem_efficient", "cudnn", "math")
                if hasattr(torch.backends.cuda, f"{k}_sdp_enabled")
            },
            "nvidia_smi": _nvidia_smi,
        }
        for key, get in extras.items():  # facts only: none of them may stop the run
            try:
                env[key] = get()
            except Exception as e:
                env[key] = f"unknown: {_error_text(e)}"
    else:
        env["gpu"] = None
        env["cpu"] = platform.processor() or platform.machine()
    return env


def _nvidia_smi() -> str | None:
    query = "name,driver_version,clocks.max.sm,clocks.sm,power.limit,temperature.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return f"{query}: {out.stdout.strip()}" if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


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


# -- sections ------------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace, device: torch.device, results: Results) -> None:
        self.args, self.device, self.results = args, device, results
        self.clock = Clock(args.deadline_s)
        entry = results.env.get("peak_bf16")
        self.peak: float | None = entry["flops"] if entry else None
        self.hw: tuple[int, int] = (args.height, args.width)
        self.current = "start"
        self.mfu_rows: list[dict[str, Any]] = []
        self.compile_measured: dict[str, float] = {}

    def section_end(self, fraction: float) -> float:
        return self.args.deadline_s * fraction


def section_mfu(ctx: Context) -> dict[str, Any]:
    """Batch sizes up to 8, every size: the table's core."""
    args = ctx.args
    plan = [(size, args.batches_2b if size == "2b" else args.batches) for size in args.sizes]
    return _mfu_pass(ctx, plan, ctx.section_end(args.mfu_until))


def section_mfu_late(ctx: Context) -> dict[str, Any]:
    """The big batches (32), run last: their activations pass 2**31 elements in the depth head,
    the likeliest place for a kernel to fail, and a failed kernel can spoil the CUDA context
    for everything after it."""
    args = ctx.args
    plan = [(size, args.late_batches) for size in args.late_sizes]
    return _mfu_pass(ctx, plan, args.deadline_s)


def _mfu_pass(ctx: Context, plan: list[tuple[str, list[int]]], end: float) -> dict[str, Any]:
    dev, clock = ctx.device, ctx.clock
    doc = ctx.results.doc("models")
    doc.update(
        input_hw=list(ctx.hw),
        dtype=str(_dtype(dev)),
        tasks=list(TASKS),
        timing=(
            "forward of the model groups under inference_mode on a fixed random batch "
            "(outputs stay on the device), CUDA events around the timed calls, after warm-up"
        ),
        flops="FlopCounterMode on the meta device, per crop, summed over the layout's groups",
        rows=ctx.mfu_rows,
    )
    before = len(ctx.mfu_rows)
    for size, batches in plan:
        if not batches:
            continue
        for layout in ("released", "shared"):
            base = {"size": size, "layout": layout}
            if clock.left(end) <= 0:
                ctx.mfu_rows.append({**base, "status": "skipped: deadline"})
                ctx.results.save("models")
                continue
            flops = count_layout_flops(heads_of(size, TASKS), size, ctx.hw, layout)
            base.update(tflop_per_crop=flops / 1e12, groups=4 if layout == "released" else 1)
            _mem_reset(dev)
            try:
                groups = _build(size, layout, dev, ctx.hw)
            except Exception as e:  # one row's failure: the next size goes on
                ctx.mfu_rows.append({**base, "status": f"error: build: {_error_text(e)}"})
                ctx.results.save("models")
                _free(dev)
                continue
            weights = _mem_now(dev)
            log(f"mfu {size} {layout}: built, weights {weights} GiB", clock)
            for batch in batches:
                row = {**base, "batch": batch, "weights_gib": weights}
                if clock.left(end) <= 0:
                    ctx.mfu_rows.append({**row, "status": "skipped: deadline"})
                    continue
                try:
                    row.update(_measure_groups(ctx, groups, batch, flops))
                    row["status"] = "ok"
                except Exception as e:
                    row["status"] = "out of memory" if _is_oom(e) else f"error: {_error_text(e)}"
                ctx.mfu_rows.append(row)
                ctx.results.save("models")
                log(f"mfu {_short(row)}", clock)
                if row["status"] != "ok":
                    _free(dev)
                    if _is_oom_status(row):
                        break  # larger batches of this model would not fit either
            del groups
            _free(dev)
    mine = ctx.mfu_rows[before:]
    return {"rows": len(mine), "ok": sum(r.get("status") == "ok" for r in mine)}


def _is_oom_status(row: dict[str, Any]) -> bool:
    return row.get("status") == "out of memory"


def _measure_groups(
    ctx: Context, groups: list[torch.nn.Module], batch: int, flops: int
) -> dict[str, Any]:
    dev = ctx.device
    _mem_reset(dev)
    x = torch.randn(batch, 3, *ctx.hw, device=dev, dtype=_dtype(dev))

    def forward() -> None:
        for g in groups:
            g(x)

    with torch.inference_mode():
        sec, n = time_calls(
            forward,
            dev,
            warmup=ctx.args.warmup,
            target_s=ctx.args.target_s,
            max_iters=ctx.args.max_iters,
            min_iters=ctx.args.min_iters,
            clock=ctx.clock,
        )
    return {"iters": n, **_rate_fields(flops, batch, sec, ctx.peak, dev)}


def _short(row: dict[str, Any]) -> str:
    keys = ("size", "layout", "mode", "batch", "ms_per_batch", "crops_per_s", "mfu", "status")
    parts = []
    for k in keys:
        if k in row:
            v = row[k]
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def section_e2e(ctx: Context) -> dict[str, Any]:
    args, dev = ctx.args, ctx.device
    doc = ctx.results.doc("e2e")
    video = args.video
    if video is None or not Path(video).is_file():
        doc["status"] = f"skipped: clip not found (looked in {', '.join(map(str, clip_paths()))})"
        ctx.results.save("e2e")
        return {"status": doc["status"]}
    try:
        from bench.gpu_e2e import E2EConfig, run_e2e
    except ImportError as e:
        doc["status"] = (
            f"error: the pipeline does not import here ({_error_text(e)}); "
            "bench/gpu.sh installs the wheels of .whl/ for it"
        )
        ctx.results.save("e2e")
        raise
    batch = _pick_e2e_batch(ctx)
    stride = args.e2e_stride or _pick_stride(ctx, batch)
    cfg = E2EConfig(
        video=Path(video),
        size=args.e2e_size,
        device=str(dev),
        batch_size=batch,
        stride=stride,
        persons=args.e2e_persons,
        max_side=args.e2e_max_side,
        end_s=args.e2e_end_s,
        extra={"video": Path(video).name},
    )
    doc.update(
        status="running",
        config={"stride": stride, "persons": args.e2e_persons, "batch_size": batch},
    )
    ctx.results.save("e2e")
    result = run_e2e(cfg)
    doc.update(result)
    doc["status"] = "ok"
    ctx.results.save("e2e")
    log(
        f"e2e {result['frames']} frames, {result['crops']} crops: "
        f"{result['frames_per_s']:.2f} frames/s end to end, model only "
        f"{result['model_only_frames_per_s']:.2f} frames/s "
        f"(ratio {result['model_only_vs_e2e']:.2f})",
        ctx.clock,
    )
    return {"status": "ok", "frames": result["frames"]}


def _released_rows(ctx: Context, size: str) -> list[dict[str, Any]]:
    return [r for r in ctx.mfu_rows if r["size"] == size and r["layout"] == "released"]


def _pick_e2e_batch(ctx: Context) -> int:
    """``--e2e-batch``, unless its model-only row failed (then the largest batch that ran)."""
    want = ctx.args.e2e_batch
    rows = [r for r in _released_rows(ctx, ctx.args.e2e_size) if "batch" in r]
    failed = ("error", "out of memory")
    if any(r["batch"] == want and r.get("status", "").startswith(failed) for r in rows):
        ok = [r["batch"] for r in rows if r.get("status") == "ok" and r["batch"] < want]
        return max(ok, default=1)
    return want


def _pick_stride(ctx: Context, batch: int) -> int:
    """A stride whose model work fits a fifth of the e2e section's time (the job's forwards,
    then the model-only loop, and the pipeline around them), from the measured released-layout
    row at the e2e batch size; 4 to 6 (86 to 58 frames of the clip), 4 when none was
    measured."""
    args = ctx.args
    row = next(
        (
            r
            for r in _released_rows(ctx, args.e2e_size)
            if r.get("status") == "ok" and r["batch"] == batch
        ),
        None,
    )
    if row is None:
        return 4
    budget = max(10.0, ctx.clock.left(ctx.section_end(args.e2e_until)) / 5)
    crops = budget * row["crops_per_s"]
    frames = max(8.0, crops / max(1, args.e2e_persons))
    return int(min(6, max(4, math.ceil(args.e2e_frames_hint / frames))))


def section_compile(ctx: Context) -> dict[str, Any]:
    """Eager for every size first (cheap), then the compiles, smallest size first, each only
    when its estimated compile time fits before the deadline, then the manual CUDA graphs."""
    args, dev, clock = ctx.args, ctx.device, ctx.clock
    doc = ctx.results.doc("compile")
    rows: list[dict[str, Any]] = []
    doc.update(
        input_hw=list(ctx.hw),
        dtype=str(_dtype(dev)),
        layout="shared (one backbone, four heads)",
        grad_mode="no_grad",
        backend="eager (smoke: graph capture only, no code generation)"
        if args.smoke
        else "inductor",
        rows=rows,
    )
    models: dict[str, tuple[torch.nn.Module, int]] = {}
    for size in args.compile_sizes:
        _mem_reset(dev)
        try:
            (model,) = _build(size, "shared", dev, ctx.hw)
            models[size] = (
                model,
                count_layout_flops(heads_of(size, TASKS), size, ctx.hw, "shared"),
            )
        except Exception as e:
            rows.append({"size": size, "status": f"error: build: {_error_text(e)}"})
            ctx.results.save("compile")
            _free(dev)
    # The manual capture last: a capture that fails can leave the CUDA context unusable.
    phases = (("eager",), ("compile_default", "compile_reduce_overhead"), ("cuda_graph",))
    for modes in phases:
        for size, (model, flops) in models.items():
            for batch in args.compile_batches:
                x = torch.randn(batch, 3, *ctx.hw, device=dev, dtype=_dtype(dev))
                for mode in modes:
                    row: dict[str, Any] = {"size": size, "batch": batch, "mode": mode}
                    try:
                        row.update(_compile_row(ctx, model, x, mode, flops))
                    except Exception as e:
                        row["status"] = (
                            "out of memory" if _is_oom(e) else f"error: {_error_text(e)}"
                        )
                        with contextlib.suppress(Exception):
                            torch._dynamo.reset()
                        _free(dev)
                    rows.append(row)
                    ctx.results.save("compile")
                    log(f"compile {_short(row)}", clock)
                del x
    models.clear()
    _free(dev)
    return {"rows": len(rows), "ok": sum(r.get("status") == "ok" for r in rows)}


def _compile_row(
    ctx: Context, model: torch.nn.Module, x: torch.Tensor, mode: str, flops: int
) -> dict[str, Any]:
    args, dev, clock = ctx.args, ctx.device, ctx.clock
    size = model.size
    timing = {
        "warmup": args.warmup,
        "target_s": args.target_s,
        "max_iters": args.max_iters,
        "min_iters": args.min_iters,
        "clock": clock,
    }
    if mode == "eager":
        if clock.left() < 5:
            return {"status": "skipped: deadline"}
        _mem_reset(dev)
        with torch.no_grad():
            sec, n = time_calls(lambda: model(x), dev, **timing)
        return {"status": "ok", "iters": n, **_rate_fields(flops, len(x), sec, ctx.peak, dev)}
    if mode == "cuda_graph":
        if dev.type != "cuda":
            return {"status": "skipped: needs CUDA"}
        if clock.left() < 10:
            return {"status": "skipped: deadline"}
        return _cuda_graph_row(ctx, model, x, flops)
    need = _compile_estimate(ctx, size)
    left = clock.left() - (args.late_reserve_s if "mfu_late" in args.sections else 0.0)
    if left < need + 5:
        return {"status": "skipped: deadline", "estimated_compile_s": need, "left_s": left}
    torch._dynamo.reset()
    _mem_reset(dev)
    try:
        compile_s, sec, n = _time_compiled(ctx, model, x, mode, timing)
    finally:
        torch._dynamo.reset()  # drops the compiled code and its CUDA graphs
        _free(dev)
    ctx.compile_measured.setdefault(size, compile_s)
    return {
        "status": "ok",
        "compile_s": compile_s,
        "iters": n,
        **_rate_fields(flops, len(x), sec, ctx.peak, dev),
    }


def _time_compiled(
    ctx: Context, model: torch.nn.Module, x: torch.Tensor, mode: str, timing: dict[str, Any]
) -> tuple[float, float, int]:
    """(compile seconds: the first call, seconds per call, calls timed)."""
    if ctx.args.smoke:
        compiled = torch.compile(model, backend="eager")
    elif mode == "compile_default":
        compiled = torch.compile(model)
    else:
        compiled = torch.compile(model, mode="reduce-overhead")
    with torch.no_grad():
        t0 = time.perf_counter()
        compiled(x)
        _sync(ctx.device)
        compile_s = time.perf_counter() - t0
        sec, n = time_calls(lambda: compiled(x), ctx.device, **timing)
    return compile_s, sec, n


def _compile_estimate(ctx: Context, size: str) -> float:
    """Seconds a compile of ``size`` should take: scaled by depth from one measured here, else
    the first guess (a reduce-overhead compile after a default one reuses cached kernels)."""
    if size in ctx.compile_measured:
        return ctx.compile_measured[size] * 1.2
    if ctx.compile_measured:
        ref, secs = next(iter(ctx.compile_measured.items()))
        return secs * ARCHES[size].depth / ARCHES[ref].depth * 1.3
    return COMPILE_GUESS_S.get(size, 120.0)


def _cuda_graph_row(
    ctx: Context, model: torch.nn.Module, x: torch.Tensor, flops: int
) -> dict[str, Any]:
    dev = ctx.device
    _mem_reset(dev)
    static_x = x.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad():
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):
                model(static_x)
        torch.cuda.current_stream(dev).wait_stream(side)
        t0 = time.perf_counter()
        with torch.cuda.graph(graph):
            static_out = model(static_x)
        torch.cuda.synchronize(dev)
        capture_s = time.perf_counter() - t0
        sec, n = time_calls(
            graph.replay,
            dev,
            warmup=1,
            target_s=ctx.args.target_s,
            max_iters=ctx.args.max_iters,
            clock=ctx.clock,
        )
    row = {
        "status": "ok",
        "capture_s": capture_s,
        "iters": n,
        **_rate_fields(flops, len(x), sec, ctx.peak, dev),
    }
    del graph, static_out, static_x
    _free(dev)
    return row


def section_trunk(ctx: Context) -> dict[str, Any]:
    """Released vs trunk (k = L/2) vs shared (k = L) per size, the three interleaved round by
    round, so the device's drift hits all three alike; skipped per size at the deadline."""
    args, dev, clock = ctx.args, ctx.device, ctx.clock
    doc = ctx.results.doc("models")
    rows: list[dict[str, Any]] = []
    doc["trunk"] = {
        "method": TRUNK_METHOD,
        "input_hw": list(ctx.hw),
        "dtype": str(_dtype(dev)),
        "batch": args.trunk_batch,
        "rows": rows,
    }
    for size in args.trunk_sizes:
        tasks = heads_of(size, TASKS)
        depth = depth_of(size)
        k = depth // 2 if args.trunk_k is None else args.trunk_k
        row: dict[str, Any] = {"size": size, "tasks": list(tasks), "depth": depth, "k": k}
        if clock.left() <= (10 if args.smoke else 40):  # builds and 10 rounds: about 30 s
            rows.append({**row, "status": "skipped: deadline"})
            ctx.results.save("models")
            continue
        try:
            row.update(_trunk_row(ctx, size, tasks, k))
            row["status"] = "ok"
        except Exception as e:
            row["status"] = "out of memory" if _is_oom(e) else f"error: {_error_text(e)}"
        rows.append(row)
        ctx.results.save("models")
        _free(dev)
        ratios = {n: v.get("crops_per_s_vs_released") for n, v in row.get("layouts", {}).items()}
        log(f"trunk {size} k={k} {row['status']} crops/s vs released {ratios}", clock)
    return {"rows": len(rows), "ok": sum(r.get("status") == "ok" for r in rows)}


def _trunk_row(ctx: Context, size: str, tasks: tuple[str, ...], k: int) -> dict[str, Any]:
    args, dev, clock = ctx.args, ctx.device, ctx.clock
    dtype, batch = _dtype(dev), args.trunk_batch
    flops = {
        "released": count_layout_flops(tasks, size, ctx.hw, "released"),
        "trunk": count_trunk_flops(tasks, size, ctx.hw, k),
        "shared": count_layout_flops(tasks, size, ctx.hw, "shared"),
    }
    _mem_reset(dev)
    trunk = build_trunk_model(tasks, size, k, device=dev, dtype=dtype, hw=ctx.hw).eval()
    groups = {
        "released": _build(size, "released", dev, ctx.hw),
        "trunk": [trunk],
        "shared": _build(size, "shared", dev, ctx.hw),
    }
    del trunk
    x = torch.randn(batch, 3, *ctx.hw, device=dev, dtype=dtype)
    names = list(TRUNK_LAYOUTS)
    total = dict.fromkeys(names, 0.0)
    per_round: list[dict[str, float]] = []
    with torch.inference_mode():
        for _ in range(args.warmup):
            for name in names:
                for g in groups[name]:
                    g(x)
        for r in range(args.trunk_rounds):
            if r >= 2 and clock.left() <= 5:
                break
            times: dict[str, float] = {}
            for name in names[r % 3 :] + names[: r % 3]:
                _sync(dev)
                t0 = time.perf_counter()
                for g in groups[name]:
                    g(x)
                _sync(dev)
                times[name] = time.perf_counter() - t0
                total[name] += times[name]
            per_round.append(times)
    rounds = len(per_round)
    peak_mem = _mem_peak(dev)
    del groups, x
    layouts = {}
    for name in names:
        seconds = total[name] / rounds
        layouts[name] = {
            "gflop_per_crop": flops[name] / 1e9,
            "flops_vs_released": flops[name] / flops["released"],
            "crops_per_s_vs_released": total["released"] / total[name],
            "crops_per_s_vs_released_per_round": [t["released"] / t[name] for t in per_round],
            **_rate_fields(flops[name], batch, seconds, ctx.peak, dev),
        }
        layouts[name]["peak_mem_gib"] = None  # one peak for the three: see the row's
    return {"rounds": rounds, "peak_mem_gib": peak_mem, "layouts": layouts}


SECTIONS: dict[str, tuple[Callable[[Context], dict[str, Any]], str]] = {
    "mfu": (section_mfu, "models"),
    "e2e": (section_e2e, "e2e"),
    "compile": (section_compile, "compile"),
    "mfu_late": (section_mfu_late, "models"),
    "trunk": (section_trunk, "models"),
}


# -- driver --------------------------------------------------------------------------------------


def clip_paths() -> list[Path]:
    return [ROOT / ".gpudata" / CLIP_NAME, ROOT.parent / "shared" / "data" / CLIP_NAME]


def _csv(kind: type) -> Callable[[str], list[Any]]:
    return lambda text: [kind(v) for v in text.split(",") if v]


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny model, tiny sizes")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda; cpu with --smoke)")
    p.add_argument("--deadline-s", type=float, default=None, help="global deadline (420; 60 smoke)")
    p.add_argument("--grace-s", type=float, default=20.0, help="past the deadline: stop")
    p.add_argument("--results-dir", type=Path, default=None)
    p.add_argument("--sections", type=_csv(str), default=list(SECTIONS))
    p.add_argument("--sizes", type=_csv(str), default=None)
    p.add_argument("--batches", type=_csv(int), default=None)
    p.add_argument("--batches-2b", type=_csv(int), default=None)
    p.add_argument("--late-batches", type=_csv(int), default=None, help="run in mfu_late")
    p.add_argument("--late-sizes", type=_csv(str), default=None)
    p.add_argument("--late-reserve-s", type=float, default=None, help="kept from compiles")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--target-s", type=float, default=None, help="timed seconds per measurement")
    p.add_argument("--max-iters", type=int, default=50)
    p.add_argument("--min-iters", type=int, default=None)
    p.add_argument("--mfu-until", type=float, default=0.45, help="fraction of the deadline")
    p.add_argument("--e2e-until", type=float, default=0.72, help="fraction of the deadline")
    p.add_argument("--video", type=Path, default=None)
    p.add_argument("--e2e-size", default=None)
    p.add_argument("--e2e-batch", type=int, default=8)
    p.add_argument("--e2e-stride", type=int, default=None, help="default: fit the time left")
    p.add_argument("--e2e-persons", type=int, default=None)
    p.add_argument("--e2e-max-side", type=int, default=None)
    p.add_argument("--e2e-end-s", type=float, default=None)
    p.add_argument("--e2e-frames-hint", type=int, default=345, help="frames in the clip")
    p.add_argument("--compile-sizes", type=_csv(str), default=None)
    p.add_argument("--compile-batches", type=_csv(int), default=None)
    p.add_argument("--trunk-sizes", type=_csv(str), default=None, help="run in trunk")
    p.add_argument("--trunk-k", type=int, default=None, help="trunk branch point (default L/2)")
    p.add_argument("--trunk-batch", type=int, default=None)
    p.add_argument("--trunk-rounds", type=int, default=None, help="interleaved timing rounds")
    args = p.parse_args(list(argv) if argv is not None else None)
    smoke = args.smoke
    defaults: dict[str, Any] = {
        "deadline_s": 60.0 if smoke else 420.0,
        "results_dir": SMOKE_RESULTS if smoke else ROOT / "bench" / "results",
        "sizes": ["tiny"] if smoke else [*("0.3b", "0.6b", "1b", "2b"), *SAPIENS2_SIZES],
        "batches": [1] if smoke else [1, 8],
        "batches_2b": [1] if smoke else [1, 8],
        "late_batches": [2] if smoke else [32],
        "late_sizes": ["tiny"] if smoke else ["0.3b", "0.6b", "1b"],
        "late_reserve_s": 5.0 if smoke else 45.0,
        "height": 32 if smoke else INPUT_SIZE[0],
        "width": 32 if smoke else INPUT_SIZE[1],
        "warmup": 1 if smoke else 2,
        "min_iters": 1 if smoke else 2,
        "target_s": 0.05 if smoke else 1.0,
        "e2e_size": "tiny" if smoke else "0.3b",
        "e2e_persons": 2 if smoke else 6,
        "e2e_max_side": 160 if smoke else None,
        "e2e_end_s": 2.0 if smoke else None,
        "e2e_stride": 20 if smoke else None,
        "compile_sizes": ["tiny"] if smoke else ["0.3b", "1b"],
        "compile_batches": [2] if smoke else [8],
        "trunk_sizes": ["tiny"] if smoke else ["0.3b", "sapiens2-0.4b"],
        "trunk_batch": 1 if smoke else 8,
        "trunk_rounds": 3 if smoke else 10,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.video is None:
        args.video = next((c for c in clip_paths() if c.is_file()), None)
    if smoke:
        args.e2e_batch = min(args.e2e_batch, 4)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    return args


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device is None:
        args.device = "cpu" if args.smoke else "cuda"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA device here; run `bash bench/gpu.sh --smoke` (or "
            "`python bench/gpu.py --smoke`) for the CPU smoke run",
            file=sys.stderr,
        )
        return 2
    tag = "smoke" if args.smoke else "gpu"
    if args.smoke:
        torch.set_num_threads(1)  # tiny tensors: steadier on a small, busy CPU
    if device.type == "cuda" and device.index is None:  # torch.cuda calls want an index
        device = torch.device("cuda", torch.cuda.current_device())
    env = environment(args, device)
    results = Results(args.results_dir, tag, env)
    ctx = Context(args, device, results)
    run = results.doc("run")
    run.update(
        status="running",
        sections={name: {"status": "pending"} for name in args.sections},
        files=[
            f"{n}-{tag}.json"
            for n in dict.fromkeys(("run", *(SECTIONS[s][1] for s in args.sections)))
        ],
        results_dir=str(args.results_dir),
    )
    results.save("run")
    log(f"{env.get('gpu') or env.get('cpu')} torch {env['torch']} cuda {env['cuda']}", ctx.clock)
    log(f"results in {args.results_dir}; deadline {args.deadline_s:g} s", ctx.clock)
    _install_stoppers(ctx, run)
    cuda_lost: str | None = None
    for name in args.sections:
        fn, file = SECTIONS[name]
        entry = run["sections"][name]
        doc = results.doc(file)
        key = "status" if name in ("mfu", "e2e", "compile") else f"{name}_status"
        ctx.current = name
        skip = "skipped: deadline" if ctx.clock.left() <= 5 else cuda_lost
        if skip:
            entry["status"] = doc[key] = skip
            results.save_all()
            continue
        entry.update(status="running", started_s=ctx.clock.elapsed())
        results.save("run")
        log(f"section {name}", ctx.clock)
        t0 = time.perf_counter()
        try:
            entry["summary"] = fn(ctx)
            entry["status"] = "ok"
            doc.setdefault(key, "ok")
        except Exception as e:  # a failed section leaves the others running
            entry["status"] = doc[key] = f"error: {_error_text(e)}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            log(f"section {name} failed: {entry['status']}", ctx.clock)
            with contextlib.suppress(Exception):
                _free(device)
        entry["seconds"] = time.perf_counter() - t0
        if device.type == "cuda" and (problem := _cuda_broken(device)):
            cuda_lost = f"skipped: the CUDA context failed after section {name} ({problem})"
            log(cuda_lost, ctx.clock)
        results.save_all()
    run["status"] = "done"
    run["elapsed_s"] = ctx.clock.elapsed()
    run["ray_imported"] = "ray" in sys.modules  # the in-process pipeline runs without Ray
    results.save_all()
    failed = [n for n, e in run["sections"].items() if e["status"].startswith("error")]
    log(f"done in {ctx.clock.elapsed():.1f} s; failed sections: {failed or 'none'}", ctx.clock)
    return 1 if failed else 0


def _cuda_broken(device: torch.device) -> str | None:
    """None while the device still runs a kernel and reads it back, else the error."""
    try:
        probe = torch.ones(4, device=device) * 2
        return None if float(probe.sum().item()) == 8.0 else "wrong arithmetic"
    except Exception as e:
        return _error_text(e)


def _install_stoppers(ctx: Context, run: dict[str, Any]) -> None:
    """On SIGTERM, or ``--grace-s`` past the deadline while a measurement still runs, record
    where the run stopped and leave at once (every finished measurement is on disk already)."""

    def stop(reason: str, code: int) -> None:
        run["status"] = f"stopped: {reason} in section {ctx.current}"
        run["elapsed_s"] = ctx.clock.elapsed()
        with contextlib.suppress(Exception):
            ctx.results.save_all()
        log(run["status"], ctx.clock)
        os._exit(code)

    def on_term(signum: int, frame: object) -> None:
        stop(f"signal {signum}", 124)

    signal.signal(signal.SIGTERM, on_term)

    def watchdog() -> None:
        while True:
            left = ctx.clock.left() + ctx.args.grace_s
            if left <= 0:
                stop("deadline passed", 124)
            time.sleep(min(5.0, max(0.5, left)))

    threading.Thread(target=watchdog, name="gpu-bench-watchdog", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
