"""The pipeline on a real local Ray cluster, real decode of the shared clip, real Zarr stores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr

from flows.inline import run_inline
from flows.plan import plan_job
from flows.run import run_on_ray
from flows.spec import JobSpec
from models.detect import Detections
from models.track import Tracker
from storage import open_result
from tests.faults._commits import trap_stage

pytestmark = pytest.mark.ray

STRIDE = 24  # 341 decoded frames -> 15 sampled
KILL_STRIDE = 12  # 29 sampled frames: blocks of 8 commit at watermarks 8, 16, 24 and 29


def _spec(clip: Path, root: Path, job_id: str, **extra: object) -> JobSpec:
    raw = {
        "source": str(clip),
        "job_id": job_id,
        "output_root": str(root),
        "sampling": {"stride": STRIDE},
        "max_side": 160,
        "batch_size": 4,
    }
    raw.update(extra)
    return JobSpec.from_dict(raw)


def moving_boxes(stride: int, n_source: int = 341) -> dict[str, list[list[float]]]:
    """Boxes of three walking persons for the ``boxes`` detector, keyed by source index.

    Sampled frame ``i`` (source index ``i * stride``) has: person E (frames 0-5, top right,
    moving right), person W (every frame, full height, moving right) and person L (from frame 9
    on, bottom right, moving left, away from where E's lost track is predicted). E and W get
    track ids 1 and 2, L gets 3; a tracker restarted from scratch at any later frame would call
    W 1 and L 2 (see ``assert_restart_changes_ids``).
    """
    out: dict[str, list[list[float]]] = {}
    for i, source in enumerate(range(0, n_source, stride)):
        boxes = []
        if i <= 5:
            boxes.append([700.0 + 10 * i, 20.0, 900.0 + 10 * i, 300.0])
        boxes.append([60.0 + 12 * i, 60.0, 400.0 + 12 * i, 700.0])
        if i >= 9:
            boxes.append([900.0 - 14 * (i - 9), 380.0, 1200.0 - 14 * (i - 9), 710.0])
        out[str(source)] = boxes
    return out


def assert_restart_changes_ids(boxes: dict[str, list[list[float]]], starts: range) -> None:
    """A tracker restarted from scratch at any of ``starts`` (sampled frames) gives other ids
    than one that saw every frame: a resume that drops the saved tracker state is caught."""
    frames = [np.asarray(b, np.float32) for _, b in sorted((int(k), v) for k, v in boxes.items())]

    def ids(first: int) -> list[list[int]]:
        tracker = Tracker()
        out = []
        for i in range(first, len(frames)):
            n = len(frames[i])
            found = Detections(
                boxes_xyxy=frames[i], scores=np.ones(n, np.float32), frame=np.zeros(n, np.int64)
            )
            out.append(tracker.update(found, i).tolist())
        return out

    clean = ids(0)
    assert sorted({t for f in clean for t in f}) == [1, 2, 3]
    for start in starts:
        assert ids(start) != clean[start:], f"a restart at frame {start} keeps the ids"


def _assert_same_store(a: str, b: str) -> None:
    """The two stores are bitwise equal: every array (frame table, commit markers, persons,
    track ids, keypoints and their scores, every dense map), byte for byte.

    Exact equality holds for runs on the same device and torch thread count: a crop's outputs
    do not depend on the other crops of its forward (fixed, zero-padded batch shapes; see
    tests/unit/models/test_batch_independence.py), so however a run, a resumed run or a
    shared actor groups the crops, each crop gets the same bytes.
    """
    ra, rb = open_result(a), open_result(b)
    assert (ra.status, ra.num_frames) == (rb.status, rb.num_frames)
    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    for layout in ra.layout.arrays:
        x, y = np.asarray(ga[layout.path][:]), np.asarray(gb[layout.path][:])
        assert (x.dtype, x.shape) == (y.dtype, y.shape), layout.path
        if x.tobytes() != y.tobytes():
            same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
            bad = ~same
            worst = np.abs(x[bad].astype(np.float64) - y[bad].astype(np.float64)).max(initial=0)
            msg = f"{layout.path}: {int(bad.sum())} of {x.size} values differ (max |diff| {worst})"
            raise AssertionError(msg)


def test_run_writes_every_sampled_frame_once_and_equals_one_process(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    out = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "ray")))
    assert out.state == "succeeded", out.error
    reader = open_result(out.store_url)
    assert reader.status == "complete"
    assert reader.read_frames().source_index.tolist() == list(range(0, 341, STRIDE))
    persons = reader.persons(0, reader.num_frames)
    assert persons.frame.tolist() == list(range(15))  # full frame: one person per frame
    assert reader.summary().tasks == ("pose", "seg", "depth", "normal")
    ref = run_inline(plan_job(_spec(shared_clip, tmp_path, "inline")))
    _assert_same_store(out.store_url, ref.store_url)


@pytest.mark.slow  # CI runs the same kill, and every other stage's, in tests/faults
def test_killing_the_inference_process_mid_job_resumes_to_an_equal_store(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    """kill -9 of the Sapiens process and the writer, the writer caught inside a commit after
    block 0 (so the job resumes from a saved checkpoint, onto a torn block): the store equals
    a clean run's, track ids included, although the persons move, leave and arrive."""
    boxes = moving_boxes(KILL_STRIDE)
    assert_restart_changes_ids(boxes, range(8, len(boxes)))
    extra = {"detector": "boxes", "boxes": boxes, "sampling": {"stride": KILL_STRIDE}}
    plan = plan_job(_spec(shared_clip, tmp_path, "killed", **extra))
    trap = trap_stage(ray_cluster, "killed", "infer", plan.store_url, (8, 16))
    out = run_on_ray(plan)
    cut = trap.join()
    assert cut is not None and cut.inside_commit, f"no kill inside a commit ({cut})"
    assert cut.checkpoint_frames >= 8, cut
    assert out.state == "succeeded", out.error
    assert open_result(out.store_url).attrs["timings"]["attempts"] == 2
    clean = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "clean", **extra)))
    _assert_same_store(out.store_url, clean.store_url)


def test_a_corrupt_input_fails_only_its_own_job(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is a text file, not a video\n")
    out = run_on_ray(plan_job(_spec(bad, tmp_path, "bad")))
    assert out.state == "failed"
    assert "notes.mp4" in (out.error or "")
    good = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "after-bad", sampling={"stride": 170})))
    assert good.state == "succeeded" and good.frames == 3


def test_render_writes_a_playable_mp4_and_a_png(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    import av
    from PIL import Image

    from flows.render import render

    out = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "render", sampling={"stride": 85})))
    mp4 = render(out.store_url, tmp_path / "render.mp4", height=120)
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == out.frames == 5
    assert frames[0].shape[0] == 120 and frames[0].std() > 10
    png = render(out.store_url, tmp_path / "f.png", frame=3, height=120)
    assert np.asarray(Image.open(png)).shape[0] == 120


def test_split_placement_equals_fused_on_ray(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    """Both placements run the same math, so their stores are bitwise equal at the same torch
    thread count (CPU kernels order their fp32 sums by thread count, so the count changes
    the last bits, which DARK decoding of the random-weight heatmaps can turn into large
    keypoint jumps). Ray starts the split placement's fractional-CPU actors with one thread
    (OMP_NUM_THREADS=1), so the fused Sapiens actor here gets one thread too."""
    fused_plan = plan_job(_spec(shared_clip, tmp_path, "fused", sampling={"stride": 40}))
    one_thread = replace(fused_plan.infer.model, cpu_threads=1)
    fused = run_on_ray(replace(fused_plan, infer=replace(fused_plan.infer, model=one_thread)))
    split = run_on_ray(
        plan_job(_spec(shared_clip, tmp_path, "split", placement="split", sampling={"stride": 40}))
    )
    assert fused.state == split.state == "succeeded", split.error
    _assert_same_store(fused.store_url, split.store_url)


def test_whole_frame_dense_mode_equals_one_process(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    extra = {"dense_mode": "frame", "sampling": {"stride": 85}}
    out = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "frame-mode", **extra)))
    assert out.state == "succeeded", out.error
    reader = open_result(out.store_url)
    assert reader.num_frames == 5 and reader.attrs["job"]["spec"]["dense_mode"] == "frame"
    ref = run_inline(plan_job(_spec(shared_clip, tmp_path, "frame-inline", **extra)))
    _assert_same_store(out.store_url, ref.store_url)


def test_a_live_http_source_gives_the_same_store_as_the_file(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    from tests.inputs.generate import network_servers

    extra = {"sampling": {"stride": 85}}
    with network_servers(shared_clip.read_bytes()) as net:  # a real HTTP server, no seeking
        url = f"{net.http_base}/clip.mkv"
        out = run_on_ray(plan_job(_spec(url, tmp_path, "http", **extra)))
    assert out.state == "succeeded", out.error
    assert open_result(out.store_url).attrs["source"]["uri"] == url
    local = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "http-local", **extra)))
    _assert_same_store(out.store_url, local.store_url)


def _rtdetr_checkpoint(path: Path) -> Path:
    """A random RT-DETR R18 saved as the published checkpoints are: ``torch.save`` of
    ``{"ema": {"module": state}}`` with the reference implementation's parameter names."""
    import torch
    from kornia.models.rt_detr.model import RTDETR

    torch.manual_seed(5)
    model = RTDETR.from_name("rtdetr_r18vd", num_classes=80)
    published = {
        k.replace("encoder.ccfm.", "encoder.").replace(".convs.branch2", ".branch2"): v
        for k, v in model.state_dict().items()
    }
    torch.save({"ema": {"module": published, "updates": 1}}, path)
    return path


def test_rtdetr_from_a_local_weights_file_end_to_end(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    """The job names the detector's weights file, input size and thresholds; nothing is
    downloaded. (Random weights: the detections mean nothing, but every frame is either
    analysed or, with more detections than the store holds, recorded as skipped.)"""
    weights = _rtdetr_checkpoint(tmp_path / "rtdetr_r18vd_dec3_6x_coco_from_paddle.pth")
    detection = {"weights": str(weights), "input_size": 128, "score_thr": 0.5, "nms_iou": 0.5}
    spec = _spec(
        shared_clip, tmp_path, "rtdetr", detector="rtdetr", detection=detection,
        sampling={"stride": 85}, tasks=["pose"],
    )  # fmt: skip
    plan = plan_job(spec)
    assert plan.detector_options["weights"] == str(weights)
    out = run_on_ray(plan)
    assert out.state == "succeeded", out.error
    reader = open_result(out.store_url)
    assert reader.num_frames == 5
    assert set(reader.read_frames().statuses()) <= {"ok", "skipped"}
    assert reader.attrs["job"]["spec"]["detection"]["weights"] == str(weights)


def test_missing_detector_weights_fail_the_job_before_any_frame(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "rtdetr.pth"
    spec = _spec(
        shared_clip, tmp_path, "no-weights", detector="rtdetr",
        detection={"weights": str(missing)},
    )  # fmt: skip
    out = run_on_ray(plan_job(spec))
    assert out.state == "failed"
    assert "DetectorWeightsUnavailableError" in out.error and str(missing) in out.error
    assert "\n" not in out.error
    assert not Path(plan_job(spec).store_url).exists()  # no store: no work was done
