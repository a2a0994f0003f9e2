"""The ``trunk`` section of bench/gpu.py: released vs a ``models.trunk`` trunk vs shared per
size, timed in alternating rounds."""

from __future__ import annotations

import time
from typing import Any

import torch

from bench._gpu_measure import (
    TASKS,
    _build,
    _free,
    _mem_peak,
    _mem_reset,
    _rate_fields,
    _sync,
    count_layout_flops,
    count_trunk_flops,
)
from bench._gpu_run import Context, _dtype, _error_text, _is_oom, log
from bench.models import TRUNK_LAYOUTS, TRUNK_METHOD, build_trunk_model, depth_of, heads_of


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
