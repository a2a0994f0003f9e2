"""JobSpec validation and round trip."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import msgpack
import pytest

from actors.errors import ResourceLimitError
from actors.messages import VideoInfo
from flows.errors import SpecError
from flows.plan import plan_job
from flows.spec import JobSpec, Limits


def test_round_trip_through_msgpack() -> None:
    spec = JobSpec.from_dict(
        {
            "source": "video.mp4",
            "job_id": "job-1",
            "tasks": ["pose", "seg"],
            "model": {"size": "0.3b", "fmt": "torchscript"},
            "detector": "boxes",
            "boxes": {"0": [[1, 2, 30, 40]], 5: [[0, 0, 10, 10], [5, 5, 20, 30]]},
            "sampling": {"stride": 2, "start_s": 1.0, "end_s": 3.5},
            "max_side": 640,
        }
    )
    again = JobSpec.from_dict(msgpack.unpackb(msgpack.packb(spec.to_dict())))
    assert again == spec
    assert spec.boxes[5][1] == (5.0, 5.0, 20.0, 30.0)


@pytest.mark.parametrize(
    ("raw", "expectation"),
    [
        ({"source": "a.mp4"}, does_not_raise()),
        (
            {"source": "a.mp4", "colour": "red"},
            pytest.raises(SpecError, match=r"unknown key\(s\) \['colour'\]"),
        ),
        (
            {"source": "a.mp4", "model": {"sise": "1b"}},
            pytest.raises(SpecError, match="model: unknown"),
        ),
        ({"source": "a.mp4", "job_id": "../etc"}, pytest.raises(SpecError, match="job_id")),
        ({"source": "a.mp4", "tasks": ["pose", "hands"]}, pytest.raises(SpecError, match="tasks")),
        (
            {"source": "a.mp4", "detector": "boxes"},
            pytest.raises(SpecError, match="boxes are given"),
        ),
        (
            {"source": "a.mp4", "detector": "boxes", "boxes": {"x": [[0, 0, 1, 1]]}},
            pytest.raises(SpecError, match="expected a list"),
        ),
        (
            {"source": "a.mp4", "detector": "boxes", "boxes": {"1": [[5, 0, 1, 1]]}},
            pytest.raises(SpecError, match="no area"),
        ),
        ({"source": "a.mp4", "sampling": {"stride": 0}}, pytest.raises(SpecError, match="stride")),
        (
            {"source": "a.mp4", "model": {"size": "3b"}},
            pytest.raises(SpecError, match=r"model\.size"),
        ),
        ({"source": ""}, pytest.raises(SpecError, match="source is empty")),
        (
            {"source": "a.mp4", "dense_mode": "whole"},
            pytest.raises(SpecError, match=r"dense_mode must be one of \('crop', 'frame'\)"),
        ),
        (
            {"source": "a.mp4", "dense_mode": "frame", "placement": "split"},
            pytest.raises(SpecError, match="fused placement only"),
        ),
    ],
)
def test_validation(raw: dict, expectation: object) -> None:
    with expectation:  # type: ignore[attr-defined]
        JobSpec.from_dict(raw)


def test_limits_round_trip_and_validation() -> None:
    spec = JobSpec.from_dict({"source": "a.mp4", "limits": {"max_pixels": 1920 * 1080}})
    assert spec.limits.max_pixels == 1920 * 1080 and spec.limits.max_map_bytes == 8 * 2**30
    assert JobSpec.from_dict(msgpack.unpackb(msgpack.packb(spec.to_dict()))) == spec
    assert JobSpec.from_dict({"source": "a.mp4"}).limits == Limits()
    with pytest.raises(SpecError, match=r"limits: unknown key\(s\) \['max_frames'\]"):
        JobSpec.from_dict({"source": "a.mp4", "limits": {"max_frames": 1}})
    with pytest.raises(SpecError, match=r"limits\.max_map_bytes must be an int >= 1, got 0"):
        JobSpec.from_dict({"source": "a.mp4", "limits": {"max_map_bytes": 0}})


def _video(width: int, height: int) -> VideoInfo:
    return VideoInfo(
        source="v.mkv", container="matroska,webm", codec="hevc", source_width=width,
        source_height=height, width=width, height=height, fps=25.0, time_base=None,
        duration_s=None, frame_count_hint=None, rotation=0, mirrored=False, time_source="rate",
        start_pts=None, seekable=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "video", "expectation"),
    [
        ({}, (7680, 4320), does_not_raise()),  # 8K at the default tasks and batch size
        ({}, (12000, 12000), pytest.raises(ResourceLimitError, match=r"limits\.max_pixels")),
        ({}, (4320, 7680), does_not_raise()),  # portrait 8K
        (
            {"batch_size": 16, "dense_mode": "frame"},
            (7680, 4320),
            pytest.raises(ResourceLimitError, match=r"7680x4320 \(25 bytes per pixel\)"),
        ),
        ({"batch_size": 16}, (7680, 4320), does_not_raise()),  # 7 bytes of patches per pixel
        (
            {"batch_size": 40},
            (7680, 4320),
            pytest.raises(ResourceLimitError, match=r"7680x4320 \(7 bytes per pixel\)"),
        ),
        (
            {"batch_size": 16, "max_side": 3840, "dense_mode": "frame"},
            (7680, 4320),
            does_not_raise(),
        ),
        ({"batch_size": 64, "tasks": ["pose"]}, (7680, 4320), does_not_raise()),
        (
            {"limits": {"max_pixels": 12000 * 12000, "max_map_bytes": 2**40}},
            (12000, 12000),
            does_not_raise(),
        ),
    ],
)
def test_plan_passes_the_limits_to_the_decoder(
    raw: dict, video: tuple[int, int], expectation: object
) -> None:
    decode = plan_job(JobSpec.from_dict({"source": "a.mp4", **raw})).decode
    with expectation:  # type: ignore[attr-defined]
        decode.limits.check(_video(*video), decode.batch_size)


@pytest.mark.parametrize("root", ["", "   ", "/", "//", "/tmp/..", "file:///", "s3://", "s3:///"])
def test_an_output_root_that_is_empty_or_the_filesystem_root_is_refused(root: str) -> None:
    with pytest.raises(SpecError, match="output_root"):
        JobSpec.from_dict({"source": "a.mp4", "output_root": root})


@pytest.mark.parametrize("root", ["out/results", "/data/out", "s3://bucket/out", "file:///d/o"])
def test_ordinary_output_roots_are_accepted(root: str) -> None:
    assert JobSpec.from_dict({"source": "a.mp4", "output_root": root}).output_root == root


def test_detection_settings_round_trip_and_reach_the_detector() -> None:
    from flows.plan import plan_job
    from flows.spec import Detection

    raw = {
        "source": "a.mp4",
        "detector": "rtdetr",
        "detection": {"model": "rtdetr_r50vd", "weights": "/w/r50.pth", "input_size": 320,
                      "score_thr": 0.4, "nms_iou": 0.6},
    }  # fmt: skip
    spec = JobSpec.from_dict(raw)
    assert spec.detection == Detection(
        model="rtdetr_r50vd", weights="/w/r50.pth", input_size=320, score_thr=0.4, nms_iou=0.6
    )
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert plan_job(spec).detector_options == {
        "device": "auto",
        "model_name": "rtdetr_r50vd",
        "weights": "/w/r50.pth",
        "input_size": 320,
        "score_thr": 0.4,
        "nms_iou": 0.6,
    }
    assert plan_job(JobSpec(source="a.mp4")).detector_options == {}  # full-frame: none


@pytest.mark.parametrize(
    ("detection", "match"),
    [
        ({"model": "yolo"}, "detection.model"),
        ({"input_size": 100}, "multiple of 32"),
        ({"input_size": 330}, "multiple of 32"),
        ({"score_thr": 1.5}, "score_thr"),
        ({"nms_iou": 0}, "nms_iou"),
        ({"weights": ""}, "weights"),
        ({"thresholds": 1}, "thresholds"),
    ],
)
def test_bad_detection_settings_are_refused(detection: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        JobSpec.from_dict({"source": "a.mp4", "detector": "rtdetr", "detection": detection})


def test_a_local_object_store_holds_the_batches_in_flight() -> None:
    """Sized from the batch: a default job at 1080p holds 8 frames of RGB (6.2 MB each) and
    per-person patches of at most 7 bytes per frame pixel (14.5 MB): 166 MB per batch, twice
    for each of 4 batches in flight; at least 256 MiB, at most 30% of the machine. Whole-frame
    mode holds 25 bytes of frame maps per output pixel instead."""
    import os

    from flows.raylocal import MIN_OBJECT_STORE, object_store_bytes

    plan = plan_job(JobSpec(source="a.mp4"))
    # RGB; part labels + foreground 2, depth 2, normals 3 (pose has none), at source size.
    per_frame = 1080 * 1920 * (3 + 2 + 2 + 3)
    assert plan.batch_bytes() == 8 * per_frame
    assert plan_job(JobSpec(source="a.mp4", max_side=960)).batch_bytes() == 8 * per_frame
    frame_mode = JobSpec(source="a.mp4", max_side=960, dense_mode="frame")
    # part labels 1, depth 4, normals 12 and the ownership maps 8, at the output size
    assert plan_job(frame_mode).batch_bytes() == 8 * (1080 * 1920 * 3 + 540 * 960 * 25)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert object_store_bytes(plan.batch_bytes(), 4) == min(2 * 4 * 8 * per_frame, 0.3 * memory)
    assert object_store_bytes(1000, 1) == MIN_OBJECT_STORE
    assert object_store_bytes(10**13, 4) == int(0.3 * memory)


def test_live_settings_round_trip_and_reach_the_decoder() -> None:
    raw = {"source": "rtsp://cam/1", "live": {"reconnects": 0, "backoff_s": 2.5}}
    spec = JobSpec.from_dict(raw)
    assert JobSpec.from_dict(msgpack.unpackb(msgpack.packb(spec.to_dict()))) == spec
    decode = plan_job(spec).decode
    assert (decode.reconnects, decode.reconnect_backoff_s) == (0, 2.5)
    default = plan_job(JobSpec.from_dict({"source": "rtsp://cam/1"})).decode
    assert (default.reconnects, default.reconnect_backoff_s) == (5, 1.0)


@pytest.mark.parametrize(
    ("live", "match"),
    [
        ({"reconnects": -1}, r"live\.reconnects must be an int in \[0, 10000\], got -1"),
        ({"reconnects": 2.0}, r"live\.reconnects must be an int"),
        ({"reconnects": True}, r"live\.reconnects must be an int"),
        ({"backoff_s": 0}, r"live\.backoff_s must be a number in \(0, 3600\], got 0"),
        ({"backoff_s": float("inf")}, r"live\.backoff_s must be a number"),
        ({"backoff_s": "1"}, r"live\.backoff_s must be a number"),
        ({"tries": 3}, r"live: unknown key\(s\) \['tries'\]; valid keys: \['backoff_s', 're"),
    ],
)
def test_bad_live_settings_are_refused(live: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        JobSpec.from_dict({"source": "rtsp://cam/1", "live": live})
