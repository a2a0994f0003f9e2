"""A shared SapiensWorker called from several threads (as a threaded Ray actor is, one thread
per in-flight call of any job): crops of different jobs meet in one forward, and every call
gets exactly the results it would get alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from actors.infer import InferSpec, ModelSpec, SapiensWorker
from actors.messages import FrameBatch, PersonBatch
from tests._compare import assert_results_close

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
        tasks=TASKS,
        model=ModelSpec(num_keypoints=17, device="cpu"),
        batch_size=8,
        batch_deadline_ms=2000,
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
            assert_results_close(a, b)  # argmax ties may flip at 1e-6


def test_capacity_time_is_wall_clock_with_a_call_in_flight() -> None:
    """The pool sizes itself from frames per ``active_s``: the whole call (cropping, decoding,
    waiting for a forward), not the forwards alone, and never the idle time between calls."""
    spec = InferSpec(tasks=TASKS, model=ModelSpec(num_keypoints=17, device="cpu"), batch_size=2)
    worker = SapiensWorker(spec)
    start = time.perf_counter()
    worker(*_call(0), 0, (48, 64), job="job0")
    took = time.perf_counter() - start
    first = worker.stats()
    time.sleep(0.3)
    idle = worker.stats()
    assert first["busy_s"] < first["active_s"] <= took
    assert idle["active_s"] == first["active_s"]


def _assert_same(solo, mixed) -> None:
    for a, b in zip(solo, mixed, strict=True):
        assert_results_close(a, b)


def test_one_actor_per_model_serves_jobs_with_different_tasks_and_dense_modes() -> None:
    """The pool keys actors by model alone: jobs asking for other tasks or another dense mode
    share one actor (and its forwards), and each gets what an actor made for it gives."""
    model = ModelSpec(num_keypoints=17, device="cpu")
    asks = [(("pose",), "crop"), (("seg", "depth"), "frame"), (("normal", "pose"), "crop")]
    alone = []
    for j, (tasks, mode) in enumerate(asks):
        own = SapiensWorker(InferSpec(tasks=tasks, model=model, dense_mode=mode, batch_size=8))
        alone.append(own(*_call(j), 0, (48, 64), job=f"job{j}"))
    shared = SapiensWorker(model, batch_size=8, batch_deadline_ms=2000)
    start = threading.Barrier(len(asks))

    def run(j: int):
        start.wait()
        tasks, mode = asks[j]
        return shared(*_call(j), 0, (48, 64), job=f"job{j}", tasks=tasks, dense_mode=mode)

    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(run, range(len(asks))))
    assert shared.stats()["mixed_forwards"] >= 1  # jobs of different tasks shared forwards
    for (tasks, _), solo, mixed in zip(asks, alone, together, strict=True):
        _assert_same(solo, mixed)
        assert (mixed[0].keypoints_xy is not None) == ("pose" in tasks)
        assert ("depth" in mixed[0].tasks) == ("depth" in tasks)
    facts = shared.model_facts(("depth",))
    assert facts["tasks"] == ["depth"] and set(facts["checkpoints"]) == {"backbone", "depth"}


def test_released_groups_load_on_first_use(monkeypatch) -> None:
    """Released checkpoints are one backbone per task, loaded when a job first asks for the
    task. Stand-in: a released checkpoint is GBs, so each task's group here is a tiny-size
    model with that one head, built through the same ``build_groups`` hook."""
    import actors.infer as infer_mod
    from models import build_model
    from models.runtime import Predictor

    loads: list[tuple[str, ...]] = []

    def per_task_groups(key, tasks, batch_size):
        loads.append(tuple(tasks))
        runtime = infer_mod.runtime_spec(key, batch_size)
        return [Predictor(build_model((t,), "tiny", num_keypoints=17), runtime) for t in tasks]

    monkeypatch.setattr(infer_mod, "build_groups", per_task_groups)
    worker = SapiensWorker(ModelSpec(size="0.3b", crop_size=(256, 192), device="cpu"))
    assert worker.tasks == () and loads == []  # nothing before a job asks
    worker(*_call(0), 0, (48, 64), tasks=("pose",))
    assert worker.tasks == ("pose",) and loads == [("pose",)]
    worker(*_call(1), 0, (48, 64), tasks=("pose", "depth"))
    assert worker.tasks == ("pose", "depth") and loads == [("pose",), ("depth",)]
    res = worker(*_call(1), 0, (48, 64), tasks=("depth",))
    assert loads == [("pose",), ("depth",)]  # loaded once
    assert res[0].keypoints_xy is None and res[0].tasks == ("depth",)
    with pytest.raises(ValueError, match="subset"):
        worker(*_call(1), 0, (48, 64), tasks=("pointmap",))
