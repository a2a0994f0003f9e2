"""torchcodec (forced onto its CPU device) against PyAV on every generated input it is allowed
to read: the same indices, pts, times and corrupt counts, and the same pixels (within the colour
conversion of another FFmpeg build for 10-bit and FFV1 input); a file it fails on mid-way is
finished by PyAV. Skipped where torchcodec is not installed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from media import VideoReader, probe_video, torchcodec_error, torchcodec_unsuitable
from tests.inputs.generate import Case

MISSING = torchcodec_error()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def _read(case: Case, backend: str) -> tuple[VideoReader, list[tuple[Any, ...]]]:
    info = probe_video(case.source, max_side=None, threads=1, open_timeout_s=5, read_timeout_s=5)
    reader = VideoReader(case.source, info, threads=1, backend=backend, corrupt_slots=True)  # type: ignore[arg-type]
    return reader, [(f.index, f.pts, f.time_s, f.corrupt, f.rgb()) for f in reader]


def test_torchcodec_reads_every_input_it_may_as_pyav_does(input_cases: dict[str, Case]) -> None:
    used, handed_over = [], []
    for case in input_cases.values():
        if case.error is not None or "://" in case.source:
            continue
        info = probe_video(
            case.source, max_side=None, threads=1, open_timeout_s=5, read_timeout_s=5
        )
        if torchcodec_unsuitable(case.source, info) is not None:
            continue
        ref_reader, ref = _read(case, "pyav")
        reader, got = _read(case, "torchcodec-cpu")
        assert [r[:4] for r in got] == [r[:4] for r in ref], case.name
        assert reader.n_corrupt == ref_reader.n_corrupt, case.name
        worst = max(
            (int(np.abs(a[4].astype(int) - b[4]).max()) for a, b in zip(ref, got, strict=True)),
            default=0,
        )
        other_colour = case.name in ("ten_bit_yuv420p10le", "odd_size_33x17_ffv1")
        assert worst <= (8 if other_colour else 0), case.name
        (used if reader.fallback is None else handed_over).append(case.name)
    assert len(used) >= 10, used  # not vacuous: most inputs are torchcodec's
    assert "corrupt_last_packet" in handed_over  # its damaged packet ends the torchcodec pass
