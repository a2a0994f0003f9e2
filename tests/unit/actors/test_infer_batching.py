"""A shared SapiensWorker called from several threads (as a threaded Ray actor is, one thread
per in-flight call of any job): crops of different jobs meet in one forward, and every call
gets exactly the results it would get alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from actors.infer import InferSpec, SapiensWorker
from actors.messages import FrameBatch, PersonBatch

TASKS = ("pose", "seg", "depth", "normal")


def _call(job: int) -> tuple[FrameBatch, PersonBatch]:
    rng = np.random.default_rng(job)
    frames = rng.integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)
    batch = FrameBatch(
        job_id=f"job{job}",
        batch_index=0,
        frames=frames,
        source_index=np.array([0, 1], np.int64),
        pts=np.array([0, 1], np.int64),
        time_s=np.array([0.0, 0.04]),
        is_last=True,
    )
    persons = PersonBatch(
        boxes=np.array([[10, 5, 60, 90], [50, 0, 120, 95]], np.float32) + job,
        scores=np.array([0.9, 0.8], np.float32),
        frame=np.array([0, 1], np.int64),
        track_id=np.array([1, 2], np.int64),
    )
    return batch, persons


def test_concurrent_jobs_share_forwards_and_get_their_own_results() -> None:
    spec = InferSpec(
        tasks=TASKS, num_keypoints=17, batch_size=8, device="cpu", batch_deadline_ms=2000
    )
    alone = [SapiensWorker(spec)(*_call(j), 0, (48, 64), job=f"job{j}") for j in range(3)]
    shared = SapiensWorker(spec)
    start = threading.Barrier(3)

    def run(j: int):
        start.wait()
        return shared(*_call(j), 0, (48, 64), job=f"job{j}")

    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(run, range(3)))
    stats = shared.stats()
    assert stats["calls"] == 3 and stats["jobs"] == 3 and stats["crops"] == 6
    assert stats["forwards"] < 3 and stats["mixed_forwards"] >= 1  # jobs shared forwards
    for solo, mixed in zip(alone, together, strict=True):
        for a, b in zip(solo, mixed, strict=True):
            for name in ("keypoints_xy", "keypoint_score", "depth", "normal"):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-4)
            assert (a.part == b.part).mean() > 0.999  # argmax ties may flip at 1e-6
            np.testing.assert_array_equal(a.track_id, b.track_id)


def test_capacity_time_is_wall_clock_with_a_call_in_flight() -> None:
    """The pool sizes itself from frames per ``active_s``: the whole call (cropping, decoding,
    waiting for a forward), not the forwards alone, and never the idle time between calls."""
    spec = InferSpec(tasks=TASKS, num_keypoints=17, batch_size=2, device="cpu")
    worker = SapiensWorker(spec)
    start = time.perf_counter()
    worker(*_call(0), 0, (48, 64), job="job0")
    took = time.perf_counter() - start
    first = worker.stats()
    time.sleep(0.3)
    idle = worker.stats()
    assert first["busy_s"] < first["active_s"] <= took
    assert idle["active_s"] == first["active_s"]
