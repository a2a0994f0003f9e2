#!/usr/bin/env bash
# Every GPU measurement in one call of at most 8 minutes (bench/gpu.py; its docstring lists the
# sections). Run from anywhere:
#
#   bash bench/gpu.sh                 # a GPU machine: results in bench/results/*-gpu.json
#   bash bench/gpu.sh --smoke         # any CPU: tiny sizes, a few seconds, results in $TMPDIR
#
# What it needs beyond torch and numpy (PyAV, Zarr, kornia, the Redis client, ...) may travel
# as wheels in .whl/ at the repository root; they are installed into /tmp/site when the Python
# here cannot import them. The clip is taken from .gpudata/ when present, else ../shared/data.
# With OUT set, every result file and the log (gpu-log.txt) are also written into "$OUT/" as
# they are produced, so a run cut short still leaves what it finished.
#
# Environment: PYTHON (default python3; .venv/bin/python when python3 has no torch),
# OUT (a directory for copies of the results), TMPDIR.
set -uo pipefail
shopt -s nullglob  # a pattern that matches nothing (no .whl/ here) expands to nothing
T0=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
export PYTHONUNBUFFERED=1
export GPU_BENCH_T0=$T0
export GPU_BENCH_CMD="bash bench/gpu.sh $*"

smoke=0
deadline=420
prev=""
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    --deadline-s=*) deadline=${arg#*=} ;;
  esac
  [ "$prev" = "--deadline-s" ] && deadline=$arg
  prev=$arg
done
[ $smoke = 1 ] && [ "$deadline" = 420 ] && deadline=60
deadline=${deadline%.*}

PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
  else
    echo "[gpu.sh] $PY cannot import torch and there is no .venv: nothing can run" >&2
    exit 2
  fi
fi
if [ $smoke = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "[gpu.sh] no CUDA device here: run 'bash bench/gpu.sh --smoke' for the CPU smoke run" >&2
  exit 2
fi

if [ $smoke = 1 ]; then
  RESULTS="${TMPDIR:-/tmp}/sapiens-stream-gpu-smoke"
  tag=smoke
else
  RESULTS="$ROOT/bench/results"
  tag=gpu
fi
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu-log.txt"
: >"$LOG"
tees=("$LOG")
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && : >"$OUT/gpu-log.txt" && tees+=("$OUT/gpu-log.txt")
fi

main() {
  echo "[gpu.sh] $(date -u +%FT%TZ) in $ROOT: $GPU_BENCH_CMD"
  echo "[gpu.sh] python: $(command -v "$PY" || echo "$PY")"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  # .whl/*.whl: what the pipeline needs beyond the machine's torch stack (PyAV, Zarr, kornia,
  # the Redis client, ...); .whl/fallback/*.whl: their own dependencies (PyYAML, packaging,
  # typing_extensions), which torch and huggingface_hub normally bring: taken only when missing
  # or older than zarr needs.
  local wheels=()
  if ! "$PY" -c "import av, zarr, numcodecs, kornia, redis" 2>/dev/null; then
    wheels+=(.whl/*.whl)
    if ! "$PY" - 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version

import packaging, typing_extensions, yaml  # noqa: F401


def at_least(dist, want):
    return tuple(int(p) for p in version(dist).split(".")[:2]) >= want


sys.exit(0 if at_least("typing_extensions", (4, 12)) and at_least("packaging", (22, 0)) else 1)
EOF
    then
      wheels+=(.whl/fallback/*.whl)
    fi
  fi
  if [ ${#wheels[@]} -gt 0 ]; then
    echo "[gpu.sh] installing into /tmp/site: ${wheels[*]##*/}"
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "${wheels[@]}"; then
      echo "[gpu.sh] pip failed: unpacking the wheels into /tmp/site instead"
      "$PY" - "${wheels[@]}" <<'EOF'
import sys
import zipfile

for whl in sys.argv[1:]:
    with zipfile.ZipFile(whl) as z:
        z.extractall("/tmp/site")
    print("[gpu.sh] unpacked", whl)
EOF
    fi
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  fi
  "$PY" - <<'EOF'
import importlib
for name in ("torch", "numpy", "av", "zarr", "numcodecs", "kornia", "kornia_rs", "redis", "msgpack"):
    try:
        mod = importlib.import_module(name)
        print(f"[gpu.sh] import {name} {getattr(mod, '__version__', '?')}")
    except Exception as e:
        print(f"[gpu.sh] import {name} FAILED: {type(e).__name__}: {e}")
EOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader
  # The Python side keeps its own deadline, counted from this script's start, and stops itself
  # 20 s past it; `timeout` is the backstop, 35 s past it (then SIGKILL 10 s later).
  local left=$((deadline + 35 - ($(date +%s) - T0)))
  local rc
  if command -v timeout >/dev/null; then
    timeout -k 10 $((left > 30 ? left : 30)) "$PY" bench/gpu.py --results-dir "$RESULTS" "$@"
    rc=$?
  else
    "$PY" bench/gpu.py --results-dir "$RESULTS" "$@"
    rc=$?
  fi
  echo "[gpu.sh] bench/gpu.py exited $rc after $(($(date +%s) - T0)) s"
  return $rc
}

main "$@" 2>&1 | tee -a "${tees[@]}"
rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  for f in "$RESULTS"/*-$tag.json; do
    [ -e "$f" ] && cp -f "$f" "$OUT/" 2>/dev/null
  done
fi
echo "[gpu.sh] results in $RESULTS: $(cd "$RESULTS" && ls -- *-$tag.json gpu-log.txt 2>/dev/null | tr '\n' ' ')"
echo "[gpu.sh] done after $(($(date +%s) - T0)) s"
exit "$rc"
