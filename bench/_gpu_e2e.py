"""The ``e2e`` section of bench/gpu.py: it finds the clip, picks the batch and stride from the
``mfu`` rows and runs one in-process pipeline job through bench/gpu_e2e.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench._gpu_run import Context, _error_text, log

ROOT = Path(__file__).resolve().parents[1]
CLIP_NAME = "people_walking_720p.avi"


def clip_paths() -> list[Path]:
    return [ROOT / ".gpudata" / CLIP_NAME, ROOT.parent / "shared" / "data" / CLIP_NAME]


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
