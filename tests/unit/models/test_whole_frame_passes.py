"""Whole-frame dense mode computes exactly the images it needs: person crops go only to the
pose group and whole frames only to the dense groups (released checkpoints are one group per
task, so a wasted image is a whole backbone pass)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import Tensor

from models import build_model
from models.analyze import Analyzer
from models.batching import DynamicBatcher
from models.runtime import Predictor, RuntimeSpec

CROP = (64, 48)


class CountingPredictor(Predictor):
    """A predictor that counts the images it is given (before any padding to its batch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.images = 0

    def __call__(self, images: Tensor, tasks=None) -> dict[str, Tensor]:
        self.images += int(images.shape[0])
        return super().__call__(images, tasks)


def _groups(tasks: tuple[str, ...]) -> dict[str, CountingPredictor]:
    """One tiny-size group per task, shaped like the released checkpoints."""
    torch.manual_seed(0)
    spec = RuntimeSpec(device="cpu", batch_size=4)
    return {t: CountingPredictor(build_model((t,), "tiny", num_keypoints=17), spec) for t in tasks}


def _inputs(n_frames: int, persons_per_frame: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 255, (n_frames, 3, 96, 128), generator=g, dtype=torch.uint8)
    frame_index = torch.arange(n_frames).repeat_interleave(persons_per_frame)
    n = len(frame_index)
    x = torch.linspace(0, 60, n)
    boxes = torch.stack([x, torch.full((n,), 5.0), x + 40, torch.full((n,), 90.0)], dim=1)
    return frames, frame_index, boxes, torch.linspace(0.9, 0.5, n)


@pytest.mark.parametrize("batched", [False, True])
def test_each_group_sees_only_its_images(batched: bool) -> None:
    tasks = ("pose", "seg", "depth", "normal")
    groups = _groups(tasks)
    analyzer = Analyzer(list(groups.values()), crop_size=CROP, dense_mode="frame")
    frames, frame_index, boxes, scores = _inputs(n_frames=2, persons_per_frame=3)
    kw = {"out_size": (48, 64), "tasks": tasks}
    if batched:  # through a batcher session, as the Sapiens actor calls it
        batcher = DynamicBatcher(analyzer.run_groups, batch_size=4, deadline_s=0.0)
        try:
            with batcher.session("job", frozenset(tasks)) as submit:
                res = analyzer(frames, frame_index, boxes, scores, forward=submit, **kw)
        finally:
            batcher.close()
    else:
        res = analyzer(frames, frame_index, boxes, scores, **kw)
    # 6 persons -> 6 crops for pose; 2 frames -> 2 images for each dense group.
    assert {t: g.images for t, g in groups.items()} == {
        "pose": 6,
        "seg": 2,
        "depth": 2,
        "normal": 2,
    }
    assert res.keypoints is not None and res.keypoints.shape[0] == 6
    assert res.maps is not None and res.maps.depth is not None


def test_pose_alone_runs_no_dense_group_and_dense_alone_no_pose_group() -> None:
    groups = _groups(("pose", "depth"))
    analyzer = Analyzer(list(groups.values()), crop_size=CROP, dense_mode="frame")
    frames, frame_index, boxes, scores = _inputs(n_frames=3, persons_per_frame=2)
    analyzer(frames, frame_index, boxes, scores, out_size=(48, 64), tasks=("pose",))
    assert (groups["pose"].images, groups["depth"].images) == (6, 0)
    analyzer(frames, frame_index, boxes, scores, out_size=(48, 64), tasks=("depth",))
    assert (groups["pose"].images, groups["depth"].images) == (6, 3)


def test_a_session_may_submit_several_requests() -> None:
    """Crops and frames of one call are two requests of one session, each with its own wants."""
    seen: list[tuple[int, frozenset[str] | None]] = []
    lock = threading.Lock()

    def forward(x: Tensor, want: frozenset[str] | None) -> dict[str, Tensor]:
        with lock:
            seen.append((int(x.shape[0]), want))
        return {"a": x * 2, "b": x + 1}

    batcher = DynamicBatcher(forward, batch_size=8, deadline_s=0.0)
    try:
        with batcher.session("job", frozenset({"a"})) as submit:
            first = submit(torch.ones(2, 1, 1, 1))
            second = submit(torch.ones(3, 1, 1, 1), frozenset({"b"}))
    finally:
        batcher.close()
    assert set(first) == {"a"} and set(second) == {"b"}
    assert seen == [(2, frozenset({"a"})), (3, frozenset({"b"}))]
