"""The bookkeeping of bench/gpu.py: its clock, its result files, its log, the environment it
records and the context every section is handed."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.models import peak_entry

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


# -- the sections' context -------------------------------------------------------------------


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
