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
import os
import signal
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

from bench._gpu_compile import section_compile  # noqa: E402
from bench._gpu_e2e import clip_paths, section_e2e  # noqa: E402
from bench._gpu_measure import _free  # noqa: E402
from bench._gpu_mfu import section_mfu, section_mfu_late  # noqa: E402
from bench._gpu_run import Context, Results, _error_text, environment, log  # noqa: E402
from bench._gpu_trunk import section_trunk  # noqa: E402
from models.spec import INPUT_SIZE  # noqa: E402

#: Sapiens2 sizes measured after the Sapiens ones (their heads serve TASKS: depth is the
#: pointmap's); the deadline skips them first.
SAPIENS2_SIZES = ("sapiens2-0.4b", "sapiens2-1b")
SMOKE_RESULTS = Path(os.environ.get("TMPDIR", "/tmp")) / "sapiens-stream-gpu-smoke"


SECTIONS: dict[str, tuple[Callable[[Context], dict[str, Any]], str]] = {
    "mfu": (section_mfu, "models"),
    "e2e": (section_e2e, "e2e"),
    "compile": (section_compile, "compile"),
    "mfu_late": (section_mfu_late, "models"),
    "trunk": (section_trunk, "models"),
}


# -- driver --------------------------------------------------------------------------------------


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
