"""The ``compile`` section of bench/gpu.py: eager vs ``torch.compile`` (default and
reduce-overhead) vs a manual CUDA graph capture, compile wall time apart."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from bench._gpu_measure import (
    TASKS,
    _build,
    _free,
    _mem_reset,
    _rate_fields,
    _short,
    _sync,
    count_layout_flops,
    time_calls,
)
from bench._gpu_run import Context, _dtype, _error_text, _is_oom, log
from bench.models import heads_of
from models.spec import ARCHES

#: First guesses of torch.compile wall time (s) on a GPU machine, before one was measured.
COMPILE_GUESS_S = {"tiny": 20.0, "0.3b": 80.0, "0.6b": 110.0, "1b": 130.0, "2b": 160.0}


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
