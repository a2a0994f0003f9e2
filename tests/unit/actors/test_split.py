"""Split placement (backbone, heads, post-processing apart) equals the fused worker."""

from __future__ import annotations

import numpy as np
import pytest

from actors.infer import InferSpec, ModelSpec, SapiensWorker
from actors.messages import FrameBatch, PersonBatch
from actors.split import BackboneWorker, HeadWorker, PostWorker
from tests._compare import assert_results_equal

TASKS = ("pose", "seg", "depth", "normal")


def _batch() -> FrameBatch:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)
    return FrameBatch(
        job_id="j",
        batch_index=0,
        frames=frames,
        source_index=np.array([4, 5], np.int64),
        pts=np.array([8, -1], np.int64),
        time_s=np.array([0.16, 0.2]),
        is_last=False,
    )


def _persons() -> PersonBatch:
    return PersonBatch(
        boxes=np.array([[50, 0, 120, 95], [10, 5, 60, 90]], np.float32),
        scores=np.array([0.8, 0.9], np.float32),
        frame=np.array([0, 1], np.int64),
        track_id=np.array([1, 3], np.int64),
    )


@pytest.mark.parametrize("tasks", [TASKS, ("depth",)])
def test_split_equals_fused(tasks: tuple[str, ...]) -> None:
    spec = InferSpec(tasks=tasks, model=ModelSpec(num_keypoints=17, device="cpu"), batch_size=2)
    batch, persons = _batch(), _persons()
    fused = SapiensWorker(spec)(batch, persons, 10, (48, 64))
    fb = BackboneWorker(spec)(batch, persons, 10, (48, 64))
    outputs = [HeadWorker(spec, t)(fb) for t in tasks]
    split = PostWorker(spec)(fb, *outputs)
    assert [r.index for r in split] == [10, 11] and split[0].pts == 8 and split[1].pts is None
    assert [r.track_id.tolist() for r in split] == [[1], [3]]
    for a, b in zip(fused, split, strict=True):
        assert_results_equal(a, b)


def test_flip_test_is_refused_in_split_placement() -> None:
    with pytest.raises(ValueError, match="flip_test"):
        BackboneWorker(InferSpec(tasks=("pose",), model=ModelSpec(flip_test=True, device="cpu")))
