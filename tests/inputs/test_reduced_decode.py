"""A whole job decoded at a reduced size (``JobSpec.reduced_decode``): the frames are converted
at the size the plan's rule gives and no larger, the stored frames, times and map size equal a
full-size run's, and the boxes, scaled back by the recorded sizes, land where a full-size run
puts them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import media._reader
from flows.inline import run_inline
from flows.plan import decode_floor, plan_job
from flows.spec import JobSpec
from media import SizeFloor, VideoInfo
from storage import open_result
from tests.inputs.boxclip import write_clip

#: The tiny model's input (256 x 192), the maps' max_side 160: a 640 x 360 clip decodes at
#: the smallest size whose height is >= 256: 256 x 456 (455.1 rounded up).
REDUCED = (256, 456)


def _spec(clip: Path, root: Path, job_id: str, **extra: Any) -> JobSpec:
    raw = {
        "source": str(clip),
        "job_id": job_id,
        "output_root": str(root),
        "tasks": ["seg", "depth"],
        "dense_mode": "frame",
        "max_side": 160,
        "sampling": {"stride": 2},
        "batch_size": 2,
        **extra,
    }
    return JobSpec.from_dict(raw)


@pytest.mark.parametrize(
    ("extra", "floor"),
    [
        ({}, None),  # not asked for
        ({"reduced_decode": True}, SizeFloor(height=256, width=192, side=160)),
        ({"reduced_decode": True, "tasks": ["pose", "seg"]}, None),  # pose crops
        ({"reduced_decode": True, "dense_mode": "crop"}, None),  # dense tasks on crops
        ({"reduced_decode": True, "max_side": None}, None),  # maps at the coded size
        ({"reduced_decode": True, "detector": "boxes", "boxes": {0: [[1, 1, 9, 9]]}}, None),
        (
            {"reduced_decode": True, "detector": "rtdetr", "detection": {"input_size": 320}},
            SizeFloor(height=320, width=320, side=160),
        ),
    ],
)
def test_the_plan_reduces_the_decode_only_where_nothing_kept_is_lost(
    tmp_path: Path, extra: dict[str, Any], floor: SizeFloor | None
) -> None:
    plan = plan_job(_spec(tmp_path / "clip.mp4", tmp_path, "plan", **extra))
    assert plan.decode.floor == floor
    assert decode_floor(plan.spec, plan.infer.resolved_crop_size) == floor


def test_a_reduced_decode_job_stores_what_a_full_size_job_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", width=640, height=360, n=6)
    sizes: list[tuple[int, int]] = []
    convert = media._reader.to_rgb

    def counting(frame: av.VideoFrame, out: np.ndarray, **kw: Any) -> None:
        sizes.append(out.shape[:2])
        convert(frame, out, **kw)

    monkeypatch.setattr(media._reader, "to_rgb", counting)
    full = open_result(run_inline(plan_job(_spec(clip, tmp_path, "full"))).store_url)
    assert sizes == [(360, 640)] * 3
    sizes.clear()
    small = open_result(
        run_inline(plan_job(_spec(clip, tmp_path, "small", reduced_decode=True))).store_url
    )
    assert sizes == [REDUCED] * 3  # frames 0, 2, 4; each converted once, at the reduced size

    assert (full.spec.height, full.spec.width) == (small.spec.height, small.spec.width) == (90, 160)
    assert (full.spec.source_height, full.spec.source_width) == (360, 640)
    assert (small.spec.source_height, small.spec.source_width) == REDUCED
    source = small.attrs["source"]  # the coded size is kept beside the decoded one
    assert (source["source_height"], source["source_width"]) == (360, 640)
    assert (source["height"], source["width"]) == REDUCED
    a, b = full.read_frames(), small.read_frames()
    assert a.source_index.tolist() == b.source_index.tolist() == [0, 2, 4]
    assert a.pts.tolist() == b.pts.tolist() and a.time_s.tolist() == b.time_s.tolist()
    assert full.frame(0).depth.shape == small.frame(0).depth.shape == (90, 160)

    scale = np.array([640 / REDUCED[1], 360 / REDUCED[0]] * 2)
    want = full.persons(0, 3).box_xyxy
    got = small.persons(0, 3).box_xyxy * scale
    assert want.shape == got.shape == (3, 4)
    assert np.abs(got - want).max() <= 1.0


def test_the_maps_are_sized_from_the_coded_frame_whatever_the_decode_size(tmp_path: Path) -> None:
    """A 1283 x 721 source decoded at 641 x 360 (the floor rounds up) still gets the maps a
    full-size decode gets, 640 x 360, not 640 x 359 from the decoded size."""
    plan = plan_job(_spec(tmp_path / "clip.mp4", tmp_path, "sizes", max_side=640))
    coded = {"source_width": 1283, "source_height": 721, "width": 1283, "height": 721}
    full = _info(**coded)
    small = _info(**{**coded, "width": 641, "height": 360})
    assert plan.out_size(full) == plan.out_size(small) == (360, 640)
    assert plan.store_spec(small).source_height == 360


def _info(**size: int) -> VideoInfo:
    return VideoInfo(
        source="clip.mp4",
        container="mp4",
        codec="h264",
        fps=25.0,
        time_base=None,
        duration_s=1.0,
        frame_count_hint=25,
        rotation=0,
        mirrored=False,
        time_source="rate",
        start_pts=None,
        seekable=False,
        **size,
    )
