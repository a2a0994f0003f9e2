"""Some inputs at a job's default settings, where memory is what the resource limits bound.

The rest of the suite forces ``max_side: 32`` and small files, so it never sees what a video
costs at the defaults. Here each input is decoded with the decode settings that ``plan_job``
derives from a default ``JobSpec`` (batch of 8, default limits), in a fresh subprocess whose
peak resident memory is read before and after the decode (``VmHWM`` of ``/proc/self/status``:
unlike ``ru_maxrss``, it starts afresh at ``exec`` instead of at the parent's peak).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.inputs.generate import Case

ROOT = Path(__file__).resolve().parents[2]

#: Decodes ``argv[2]`` with the DecodeSpec given as JSON in ``argv[1]``; prints the outcome and
#: how much the peak resident memory grew during the decode, in MiB.
_CHILD = """
import json, sys
from actors.decode import DecodeSpec
from actors.session import DecodeSession

def peak_mib():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

spec, source = DecodeSpec.from_dict(json.loads(sys.argv[1])), sys.argv[2]
before, out = peak_mib(), {}
try:
    session = DecodeSession(spec, "job", source)
    out["frames"] = 0
    while True:
        meta, batch = session.next()
        out["frames"] += meta.frames - int(batch.corrupt.sum())  # decoded frames, not slots
        if meta.is_last:
            break
except Exception as e:
    out["error"] = type(e).__name__
out["grew_mib"] = peak_mib() - before
print(json.dumps(out))
"""

BUDGET_MIB = 64.0
#: Inputs whose over-limit frame is only seen once decoded may also hold that one decoded frame
#: (12000 x 12000 grey, 8 bits), never a converted or batched copy of it.
ONE_HUGE_FRAME_MIB = 12000 * 12000 / 2**20
CASES = {
    "plain_clip": BUDGET_MIB,
    "rotation_displaymatrix": BUDGET_MIB,
    "resolution_change": BUDGET_MIB,
    "huge_declared_jpeg": BUDGET_MIB,
    "huge_declared_mid_stream": BUDGET_MIB,
    "huge_declared_avi_header": BUDGET_MIB,
    "huge_frame_12000_mkv": BUDGET_MIB,
    "frame_grows_past_limit_mid_stream": BUDGET_MIB + ONE_HUGE_FRAME_MIB,
}


def _decode_in_child(spec: dict[str, Any], source: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec), source],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{source}: exit {done.returncode}: {done.stderr[-2000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
def test_default_settings_decode_in_bounded_memory(input_cases: dict[str, Case]) -> None:
    from flows.plan import plan_job
    from flows.spec import JobSpec

    failures = []
    for name, budget in CASES.items():
        case = input_cases[name]
        spec = plan_job(JobSpec(source=case.source)).decode.to_dict()
        out = _decode_in_child(spec, case.source)
        if not _as_expected(case, out) or out["grew_mib"] > budget:
            failures.append(f"{name}: {out}, expected {_expected(case)} in {budget:.0f} MiB")
    assert not failures, "; ".join(failures)


def _expected(case: Case) -> str:
    return f"error {case.error.__name__}" if case.error else f"{case.frames} frames"


def _as_expected(case: Case, out: dict[str, Any]) -> bool:
    if case.error is not None:
        return out.get("error") == case.error.__name__
    if "error" in out or case.frames is None:
        return False
    # frame threads may lose more of a damaged file than one thread (see Case.frames)
    return 1 <= out["frames"] <= case.frames if case.corrupt else out["frames"] == case.frames
