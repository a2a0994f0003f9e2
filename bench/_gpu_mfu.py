"""The ``mfu`` and ``mfu_late`` sections of bench/gpu.py: crops/s, TFLOP/s, MFU and peak
memory per size, batch and layout."""

from __future__ import annotations

from typing import Any

import torch

from bench._gpu_measure import (
    TASKS,
    _build,
    _free,
    _mem_now,
    _mem_reset,
    _rate_fields,
    _short,
    count_layout_flops,
    time_calls,
)
from bench._gpu_run import Context, _dtype, _error_text, _is_oom, log
from bench.models import heads_of


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
