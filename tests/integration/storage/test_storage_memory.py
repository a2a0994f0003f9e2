"""Memory of a per-person block write: only the block's own patches are ever in memory.

A block of a per-person store owns room for R = 8 x 128 = 1024 persons at 1024 x 768 pixels
per array: about 5.6 GB for seg, foreground, depth and normals if that room were assembled.
The peak resident memory while one block of 8 frames x 3 persons is written must stay small.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import StoreSpec, Writer, open_result
from storage.synthetic import synthetic_frame

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in {STATUS}")


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc/self/clear_refs")
def test_writing_a_block_of_big_patches_keeps_memory_modest(tmp_path: Path) -> None:
    spec = StoreSpec.for_source(
        1080, 1920, num_keypoints=17, frames_per_shard=8, patch_size=(1024, 768)
    )
    assert spec.person_rows_per_block == 1024
    frames = [synthetic_frame(spec, i, n_persons=3) for i in range(8)]
    w = Writer.create(tmp_path / "big.zarr", spec, job={"job_id": "mem"}, capacity_frames=8)
    CLEAR_REFS.write_text("5")  # reset the peak (VmHWM) to the current resident size
    before = _vm("VmRSS")
    for f in frames:
        w.add(f)
    growth = _vm("VmHWM") - before
    assert w.watermark == 8
    assert growth < 2**30, f"peak resident memory grew by {growth / 2**20:.0f} MiB"
    got = open_result(tmp_path / "big.zarr").frame(7)
    assert got.patches is not None and len(got.patches) == 3
    assert got.part is not None and got.part.shape == (1080, 1920)
