"""Model throughput: crops/s per size and task, achieved TFLOP/s and model FLOPs utilisation.

Prints one JSON object. On a GPU the defaults are the production setting (0.3b and 1b, bf16,
1024x768 crops); on a CPU they are a smoke-sized run (tiny and 0.3b at 256x192, fp32), since one
0.3b crop at full resolution is heavy. Counted with FlopCounterMode at 1024x768: the 0.3b
backbone is 2.79 TFLOP per crop, its heads 0.45 (pose), 1.94 (seg), 1.72 (depth) and 1.93
(normal); one backbone feeding all four heads is 8.83 TFLOP per crop, the four released task
models (four backbones) 17.20.

Rows per size: the backbone alone, each task alone, all tasks on one shared backbone
(``layout: shared``) and all tasks as the released checkpoints run them, one backbone group per
task (``layout: released``). ``--compile both`` gives every row with and without
``torch.compile``. The dense bf16 peaks used for MFU are in ``PEAK_BF16`` (bench/gpu.py uses
the same table).

The ``trunk`` section (default; ``--no-trunk`` skips it, ``--only-trunk`` runs nothing else)
compares, per size, three ways of running every task: ``released`` (one backbone group per
task), ``trunk`` (a ``models.trunk.TrunkModel`` built from random-weight task models, stem and
blocks ``[0, k)`` shared, ``--trunk-k``, default L/2) and ``shared`` (k = L: one backbone for
every head). FLOPs (FlopCounterMode, meta device) and crops/s are given as ratios to released,
the three timed in the same run in alternating rounds (``TRUNK_METHOD`` says how). At 1024x768
the 0.3b trunk at k = 12 is 0.838 of the released FLOPs, one backbone 0.514.

Sizes are Sapiens sizes (``0.3b``) or Sapiens2 models (``sapiens2-0.4b``); a Sapiens2 size runs
its own heads (pose, seg, normal, pointmap: a ``depth`` task stands for the pointmap, whose z
it is). ``catalogue`` lists, for every released size of both families, the parameters and the
FLOPs per crop at 1024x768 (backbone, each head's task model, the released set), counted on
the meta device.

    python bench/models.py                       # defaults for the machine
    python bench/models.py --sizes 0.3b,1b --batch 16 --compile --out bench/results/h100.json
    python bench/models.py --sizes sapiens2-0.4b,sapiens2-1b --batch 8
    python bench/models.py --compile both        # each row eager and compiled
    python bench/models.py --sizes 0.3b --only-trunk --trunk-k 8 --no-catalogue
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
from models.trunk import build_trunk

#: Dense bf16 tensor-core peaks (FLOP/s) by a substring of ``torch.cuda.get_device_name``,
#: most specific first (the first match wins: "A100" before "A10", "L40S" before "L40" before
#: "L4", the H100 variants named one by one so that a PCIe card is not taken for an SXM one).
#: Source: vendor datasheet, dense (no sparsity). The A10G (an A10 variant made for one cloud
#: provider) has no public datasheet of its own: 70e12 is the figure commonly quoted for it,
#: about half the A10's 125e12; treat its MFU as approximate.
PEAK_BF16: dict[str, float] = {
    "H100 80GB HBM3": 989.4e12,  # H100 SXM5 (its device name)
    "H100 SXM": 989.4e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "GH200": 989.4e12,
    "H200 NVL": 835e12,
    "H200": 989.4e12,  # H200 SXM
    "A100": 312e12,  # SXM and PCIe alike
    "A10G": 70e12,
    "A10": 125e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "4090": 165e12,
}


def peak_entry(name: str) -> tuple[str, float] | None:
    """The ``PEAK_BF16`` entry (key, FLOP/s) whose key is in the device name ``name``, or None."""
    return next(((k, v) for k, v in PEAK_BF16.items() if k in name), None)


def peak_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the device called ``name``, or None when it is not listed."""
    entry = peak_entry(name)
    return None if entry is None else entry[1]


def split_name(name: str) -> tuple[str, str]:
    """``0.3b`` -> (``sapiens``, ``0.3b``); ``sapiens2-0.4b`` -> (``sapiens2``, ``0.4b``)."""
    return (
        ("sapiens2", name.removeprefix("sapiens2-"))
        if name.startswith("sapiens2-")
        else (
            "sapiens",
            name,
        )
    )


def heads_of(name: str, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The heads that serve ``tasks`` on model ``name`` (Sapiens2: depth is the pointmap's)."""
    if split_name(name)[0] == "sapiens":
        return tasks
    return tuple(dict.fromkeys("pointmap" if t == "depth" else t for t in tasks))


def _build(tasks: tuple[str, ...], name: str, hw: tuple[int, int], **dd: object) -> torch.nn.Module:
    family, size = split_name(name)
    extra: dict[str, object] = {"input_size": hw} if family == "sapiens2" else {}
    return build_model(tasks, size, family=family, **extra, **dd)  # type: ignore[arg-type]


def count_flops(tasks: tuple[str, ...], size: str, hw: tuple[int, int]) -> int:
    """FLOPs of one crop through the backbone and the given heads, counted on the meta device
    (``size``: a Sapiens size or a ``sapiens2-`` model name)."""
    model = _build(tasks, size, hw, device="meta").eval()  # as run: norms in eval mode
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, *hw, device="meta"))
    return int(counter.get_total_flops())


def count_layout_flops(
    tasks: tuple[str, ...], size: str, hw: tuple[int, int], layout: str = "shared"
) -> int:
    """FLOPs of one crop: ``shared`` = one backbone and every head, ``released`` = one backbone
    group per task (the released checkpoints each carry their own backbone)."""
    if layout == "released":
        return sum(count_flops((t,), size, hw) for t in tasks)
    return count_flops(tasks, size, hw)


def build_layout(
    tasks: tuple[str, ...],
    size: str,
    layout: str = "shared",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    hw: tuple[int, int] = (1024, 768),
) -> list[torch.nn.Module]:
    """Random-weight backbone groups: one for ``shared``, one per task for ``released``."""
    if layout == "released":
        return [_build((t,), size, hw, device=device, dtype=dtype) for t in tasks]
    if layout != "shared":
        raise ValueError(f"layout must be 'shared' or 'released', got {layout!r}")
    return [_build(tasks, size, hw, device=device, dtype=dtype)]


def depth_of(size: str) -> int:
    """Blocks L of the backbone of ``size`` (a Sapiens size or a ``sapiens2-`` model name)."""
    return len(_build((), size, (1024, 768), device="meta").backbone.blocks)


def build_trunk_model(
    tasks: tuple[str, ...],
    size: str,
    k: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    hw: tuple[int, int] = (1024, 768),
) -> torch.nn.Module:
    """A ``models.trunk.TrunkModel`` of random-weight one-task models sharing the stem and
    blocks ``[0, k)`` (the first task's values; no files), as ``trunk build`` makes one."""
    teachers = [_build((t,), size, hw, device=device, dtype=dtype) for t in tasks]
    shared = {n: p.detach() for n, p in teachers[0].backbone.named_parameters()}
    trunk = build_trunk(teachers, k, shared)
    del teachers, shared
    return trunk.eval()


def count_trunk_flops(tasks: tuple[str, ...], size: str, hw: tuple[int, int], k: int) -> int:
    """FLOPs of one crop through a trunk at branch point ``k``, counted on the meta device."""
    trunk = build_trunk_model(tasks, size, k, device="meta", hw=hw)
    with FlopCounterMode(display=False) as counter:
        trunk(torch.empty(1, 3, *hw, device="meta"))
    return int(counter.get_total_flops())


#: The three ways of running every task of a size that the ``trunk`` rows compare.
TRUNK_LAYOUTS = ("released", "trunk", "shared")


def bench_trunk(
    size: str, tasks: tuple[str, ...], args: argparse.Namespace, k: int | None = None
) -> dict[str, object]:
    """``released`` (one backbone group per task), ``trunk`` (models.trunk at ``k``, default
    L/2) and ``shared`` (k = L: one backbone for every head), FLOPs and crops/s, each as a
    ratio to released; the timings interleave (each round runs the three once, in a rotating
    order), so the machine's noise hits all three alike."""
    hw = (args.height, args.width)
    tasks = heads_of(size, tasks)
    depth = depth_of(size)
    k = depth // 2 if k is None else k
    if not 0 <= k <= depth:
        raise ValueError(f"--trunk-k must be in [0, {depth}] for {size}, got {k}")
    spec = RuntimeSpec(device=args.device, dtype=args.dtype, batch_size=args.batch)
    dd = {"device": args.device, "dtype": spec.torch_dtype, "hw": hw}
    # the trunk first: build_trunk copies its teachers, the copies' peak comes before the rest
    trunk = [Predictor(build_trunk_model(tasks, size, k, **dd), spec)]
    preds = {
        "released": [Predictor(m, spec) for m in build_layout(tasks, size, "released", **dd)],
        "trunk": trunk,
        "shared": [Predictor(m, spec) for m in build_layout(tasks, size, "shared", **dd)],
    }
    del trunk
    flops = {
        "released": count_layout_flops(tasks, size, hw, "released"),
        "trunk": count_trunk_flops(tasks, size, hw, k),
        "shared": count_layout_flops(tasks, size, hw, "shared"),
    }
    x = torch.randn(args.batch, 3, *hw, device=args.device)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    names = list(TRUNK_LAYOUTS)
    for _ in range(args.warmup):
        for name in names:
            for pred in preds[name]:
                pred(x)
    total = dict.fromkeys(names, 0.0)
    per_round: list[dict[str, float]] = []
    for r in range(args.iters):
        order = names[r % 3 :] + names[: r % 3]
        times: dict[str, float] = {}
        for name in order:
            sync()
            t0 = time.perf_counter()
            for pred in preds[name]:
                pred(x)
            sync()
            times[name] = time.perf_counter() - t0
            total[name] += times[name]
        per_round.append(times)
    layouts: dict[str, dict[str, object]] = {}
    for name in names:
        seconds = total[name] / args.iters
        layouts[name] = {
            "groups": len(preds[name]),
            "gflop_per_crop": flops[name] / 1e9,
            "flops_vs_released": flops[name] / flops["released"],
            "ms_per_batch": seconds * 1e3,
            "crops_per_s": args.batch / seconds,
            "crops_per_s_vs_released": total["released"] / total[name],
            "crops_per_s_vs_released_per_round": [t["released"] / t[name] for t in per_round],
        }
    del preds
    if cuda:
        torch.cuda.empty_cache()
    return {
        "size": size,
        "tasks": list(tasks),
        "depth": depth,
        "k": k,
        "rounds": args.iters,
        "warmup_rounds": args.warmup,
        "layouts": layouts,
    }


#: How the ``trunk`` section was measured (written into its JSON).
TRUNK_METHOD = {
    "released": "one random-weight task model (backbone + head) per task, as released",
    "trunk": (
        "models.trunk.build_trunk of those task models: stem and blocks [0, k) shared (one "
        "prefix per patch padding: Sapiens pose/normal pad 2, seg/depth 0, so two prefixes; "
        "Sapiens2 one), blocks [k, L), final norm and head per task"
    ),
    "shared": "k = L: one backbone for every head (layout shared)",
    "flops": (
        "torch.utils.flop_counter.FlopCounterMode, one crop, on the meta device "
        "(nothing allocated), summed over the layout's groups"
    ),
    "timing": (
        "Predictor forward (inference_mode) of a fixed random batch; each round times the three "
        "layouts once, in a rotating order, after the warm-up rounds; crops_per_s_vs_released "
        "is released seconds / layout seconds summed over the rounds"
    ),
}


#: Released task-model sizes of each family (the catalogue's rows) and their heads.
CATALOGUE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sapiens": (("0.3b", "0.6b", "1b", "2b"), ("pose", "seg", "depth", "normal")),
    "sapiens2": (
        ("sapiens2-0.4b", "sapiens2-0.8b", "sapiens2-1b", "sapiens2-5b"),
        ("pose", "seg", "normal", "pointmap"),
    ),
}


def catalogue(hw: tuple[int, int] = (1024, 768)) -> list[dict[str, object]]:
    """Parameters and FLOPs per crop at ``hw`` of every released size, on the meta device."""
    rows: list[dict[str, object]] = []
    for family, (names, tasks) in CATALOGUE.items():
        for name in names:
            params = {
                t or "backbone": sum(
                    p.numel()
                    for p in _build((t,) if t else (), name, hw, device="meta").parameters()
                )
                for t in ("", *tasks)
            }
            flops = {t: count_flops((t,), name, hw) / 1e12 for t in tasks}
            rows.append(
                {
                    "family": family,
                    "model": name,
                    "params": params,
                    "backbone_tflop": count_flops((), name, hw) / 1e12,
                    "task_model_tflop": flops,
                    "released_tflop_per_person": sum(flops.values()),
                }
            )
    return rows


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_for_name(torch.cuda.get_device_name(device))


def time_predictors(preds: list[Predictor], x: torch.Tensor, iters: int, warmup: int) -> float:
    """Seconds per round of ``pred(x)`` for every predictor, after ``warmup`` rounds,
    synchronised on CUDA."""
    sync = torch.cuda.synchronize if preds[0].device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for pred in preds:
            pred(x)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        for pred in preds:
            pred(x)
    sync()
    return (time.perf_counter() - start) / iters


def bench_one(
    size: str,
    tasks: tuple[str, ...],
    args: argparse.Namespace,
    *,
    layout: str = "shared",
    compile: bool = False,
) -> dict[str, object]:
    hw = (args.height, args.width)
    spec = RuntimeSpec(device=args.device, dtype=args.dtype, compile=compile, batch_size=args.batch)
    tasks = heads_of(size, tasks)
    groups = build_layout(tasks, size, layout, device=args.device, dtype=spec.torch_dtype, hw=hw)
    preds = [Predictor(model, spec) for model in groups]
    x = torch.randn(args.batch, 3, *hw, device=args.device)
    seconds = time_predictors(preds, x, args.iters, args.warmup)
    flops = count_layout_flops(tasks, size, hw, layout)
    achieved = flops * args.batch / seconds
    peak = peak_flops(preds[0].device)
    row: dict[str, object] = {
        "size": size,
        "tasks": list(tasks) or ["backbone"],
        "layout": layout,
        "groups": len(groups),
        "compile": compile,
        "crops_per_s": args.batch / seconds,
        "ms_per_batch": seconds * 1e3,
        "gflop_per_crop": flops / 1e9,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak is None else achieved / peak,
    }
    del preds, groups
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
    p.add_argument(
        "--compile",
        nargs="?",
        const="on",
        default="off",
        choices=("off", "on", "both"),
        help="torch.compile the groups: off (default), on (bare --compile) or both (a row each)",
    )
    p.add_argument("--no-catalogue", action="store_true", help="skip the parameter and FLOP table")
    p.add_argument(
        "--trunk-k", type=int, default=None, help="branch point of the trunk rows (default L/2)"
    )
    p.add_argument(
        "--no-trunk", action="store_true", help="skip the released/trunk/shared comparison"
    )
    p.add_argument("--only-trunk", action="store_true", help="only the trunk section")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    tasks = tuple(args.tasks.split(","))
    settings = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    rows = []
    trunk_rows: list[dict[str, object]] = []
    for size in args.sizes.split(","):
        if not args.no_trunk and len(tasks) > 1:
            trunk_rows.append(bench_trunk(size, tasks, args, args.trunk_k))
        if args.only_trunk:
            continue
        for comp in settings:
            rows.append(bench_one(size, (), args, compile=comp))
            rows.extend(bench_one(size, (task,), args, compile=comp) for task in tasks)
            rows.append(bench_one(size, tasks, args, compile=comp))
            if len(tasks) > 1:
                rows.append(bench_one(size, tasks, args, layout="released", compile=comp))
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
        "peak_bf16": peak_entry(torch.cuda.get_device_name())
        if gpu and args.device.startswith("cuda")
        else None,
        "threads": torch.get_num_threads(),
        "results": rows,
        "trunk": None if args.no_trunk else {"method": TRUNK_METHOD, "rows": trunk_rows},
        "catalogue": None if args.no_catalogue else catalogue(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
