"""A crop's outputs are bitwise independent of the other crops of its forward.

The predictor always runs fixed-shape batches (the last one zero-padded) and every stage of the
model is per-sample, so on one device and thread count a crop gets the same bytes whatever its
neighbours, its position in the batch and the number of padding rows. The pipeline relies on
it: a resumed job, or a shared actor mixing jobs, groups crops differently from a clean run,
and its store must still equal the clean run's bit for bit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import Tensor

from actors.infer import InferSpec, ModelSpec, SapiensWorker
from actors.messages import FrameBatch, PersonBatch
from models import build_model
from models.analyze import Analyzer
from models.batching import DynamicBatcher
from models.runtime import Predictor, RuntimeSpec
from tests._compare import assert_results_equal

TASKS = ("pose", "seg", "depth", "normal")
CROP = (64, 48)
BATCH = 4


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_model(TASKS, "tiny", num_keypoints=17)
    return Predictor(model, RuntimeSpec(device="cpu", batch_size=BATCH))


@pytest.fixture(scope="module")
def crops() -> Tensor:
    """Six crops, two of them extreme neighbours (all zero, large values)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, *CROP, generator=gen)
    x[2] = 0.0
    x[5] *= 50.0
    return x


@pytest.fixture(scope="module")
def reference(predictor: Predictor, crops: Tensor) -> dict[str, Tensor]:
    """Outputs of the crops in order: forwards [0..3] and [4, 5 + two padding rows]."""
    out = predictor(crops)
    assert set(out) == set(TASKS)
    return out


# Each crop lands at other positions, beside other neighbours, with 0 to 3 padding rows.
CALLS = ([5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4], [2, 4, 1], [1, 5, 0, 2], [0])


def test_a_crop_gets_the_same_bytes_in_any_batch(
    predictor: Predictor, crops: Tensor, reference: dict[str, Tensor]
) -> None:
    for rows in CALLS:
        out = predictor(crops[rows])
        for pos, i in enumerate(rows):
            for task in TASKS:
                assert torch.equal(out[task][pos], reference[task][i]), (task, i, rows)


def test_crops_of_concurrent_callers_get_the_bytes_they_get_alone(
    predictor: Predictor, crops: Tensor, reference: dict[str, Tensor]
) -> None:
    analyzer = Analyzer([predictor], crop_size=CROP)
    batcher = DynamicBatcher(analyzer.run_groups, batch_size=BATCH, deadline_s=1.0)
    requests = [[4], [0, 5], [5, 2, 1], [3, 0, 2, 1, 4]]
    start = threading.Barrier(len(requests))

    def call(k: int) -> dict[str, Tensor]:
        with batcher.session(f"job{k}") as submit:
            start.wait()
            return submit(crops[requests[k]])

    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            got = list(pool.map(call, range(len(requests))))
        stats = batcher.stats()
    finally:
        batcher.close()
    assert stats.mixed_forwards >= 1  # crops of different callers did share forwards
    for rows, out in zip(requests, got, strict=True):
        for pos, i in enumerate(rows):
            for task in TASKS:
                assert torch.equal(out[task][pos], reference[task][i]), (task, i, rows)


def _frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (4, 96, 128, 3), dtype=np.uint8)


BOXES = np.array(
    [[10, 5, 60, 90], [50, 0, 120, 95], [5, 20, 70, 80], [30, 10, 100, 90], [0, 0, 40, 60]],
    np.float32,
)


def _frame0(worker: SapiensWorker, frames: list[int], persons: list[tuple[int, int]]) -> object:
    """Run one call on ``frames`` (source indices) with ``persons`` (frame, box row) and
    return the result of frame 0, whose only person is always box 0."""
    pixels = _frames()
    batch = FrameBatch(
        job_id="j",
        batch_index=0,
        frames=pixels[frames],
        source_index=np.array(frames, np.int64),
        pts=np.array(frames, np.int64),
        time_s=np.array(frames, np.float64),
        is_last=False,
    )
    rows = sorted(range(len(persons)), key=lambda i: frames.index(persons[i][0]))
    found = PersonBatch(
        boxes=BOXES[[persons[i][1] for i in rows]],
        scores=np.full(len(persons), 0.9, np.float32),
        frame=np.array([frames.index(persons[i][0]) for i in rows], np.int64),
        track_id=np.array(rows, np.int64) + 1,
    )
    (result,) = [r for r in worker(batch, found, 0, (48, 64)) if r.source_index == 0]
    return result


def test_a_person_gets_the_same_results_whatever_else_its_call_holds() -> None:
    model = ModelSpec(num_keypoints=17, device="cpu", crop_size=CROP)
    spec = InferSpec(tasks=TASKS, model=model, batch_size=BATCH)
    worker = SapiensWorker(spec)
    try:
        ref = _frame0(worker, [0], [(0, 0)])  # alone, three padding rows
        calls = [
            ([1, 2, 0], [(1, 3), (2, 1), (0, 0)]),  # last crop of a forward
            ([0, 1, 3], [(0, 0), (1, 2), (1, 4), (3, 1)]),  # first crop, a full forward
            ([1, 3, 0], [(1, 2), (1, 4), (3, 1), (3, 3), (0, 0)]),  # alone in a 2nd forward
        ]
        for frames, persons in calls:
            assert_results_equal(_frame0(worker, frames, persons), ref, identity=False)
    finally:
        worker.batcher.close()
