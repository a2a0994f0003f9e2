"""Model throughput: crops/s per size and task, achieved TFLOP/s and model FLOPs utilisation.

Prints one JSON object. On a GPU the defaults are the production setting (0.3b and 1b, bf16,
1024x768 crops); on a CPU they are a smoke-sized run (tiny and 0.3b at 256x192, fp32), since a
single 0.3b crop at full resolution is ~2.5 TFLOP.

    python bench/models.py                       # defaults for the machine
    python bench/models.py --sizes 0.3b,1b --batch 16 --compile --out bench/results/h100.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import build_model
from models.runtime import Predictor, RuntimeSpec

#: Dense bf16 tensor-core peaks (FLOP/s) by device-name substring, from the vendors' datasheets.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}


def count_flops(tasks: tuple[str, ...], size: str, hw: tuple[int, int]) -> int:
    """FLOPs of one crop through the backbone and the given heads, counted on the meta device."""
    model = build_model(tasks, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, *hw, device="meta"))
    return int(counter.get_total_flops())


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def time_predictor(pred: Predictor, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Seconds per call of ``pred(x)``, after ``warmup`` calls, synchronised on CUDA."""
    sync = torch.cuda.synchronize if pred.device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        pred(x)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        pred(x)
    sync()
    return (time.perf_counter() - start) / iters


def bench_one(size: str, tasks: tuple[str, ...], args: argparse.Namespace) -> dict[str, object]:
    hw = (args.height, args.width)
    spec = RuntimeSpec(
        device=args.device, dtype=args.dtype, compile=args.compile, batch_size=args.batch
    )
    model = build_model(tasks, size, device=args.device, dtype=spec.torch_dtype)
    pred = Predictor(model, spec)
    x = torch.randn(args.batch, 3, *hw, device=args.device)
    seconds = time_predictor(pred, x, args.iters, args.warmup)
    flops = count_flops(tasks, size, hw)
    achieved = flops * args.batch / seconds
    peak = peak_flops(pred.device)
    row: dict[str, object] = {
        "size": size,
        "tasks": list(tasks) or ["backbone"],
        "crops_per_s": args.batch / seconds,
        "ms_per_batch": seconds * 1e3,
        "gflop_per_crop": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak is None else achieved / peak,
    }
    del pred, model
    if args.device.startswith("cuda"):
        row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return row


def main(argv: list[str] | None = None) -> dict[str, object]:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--dtype", default=None, help="float32|bfloat16|float16 (default per device)")
    p.add_argument("--sizes", default="0.3b,1b" if gpu else "tiny,0.3b")
    p.add_argument("--tasks", default="pose,seg,depth,normal")
    p.add_argument("--height", type=int, default=1024 if gpu else 256)
    p.add_argument("--width", type=int, default=768 if gpu else 192)
    p.add_argument("--batch", type=int, default=16 if gpu else 2)
    p.add_argument("--iters", type=int, default=10 if gpu else 2)
    p.add_argument("--warmup", type=int, default=3 if gpu else 1)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for size in args.sizes.split(","):
        rows.append(bench_one(size, (), args))
        rows.extend(bench_one(size, (task,), args) for task in args.tasks.split(","))
        rows.append(bench_one(size, tuple(args.tasks.split(",")), args))
    result = {
        "bench": "models",
        "device": torch.cuda.get_device_name()
        if gpu and args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": str(RuntimeSpec(device=args.device, dtype=args.dtype).torch_dtype),
        "input_hw": [args.height, args.width],
        "batch": args.batch,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "results": rows,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
