"""The pooled stages keep no job state that matters: a job's decoder position and tracker state
travel in its calls, and its commit state is its store.

Each test drives the plain classes in this process (as one Ray actor thread would), against a
job run by the per-job classes they wrap.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from actors._sessions import SessionCache
from actors.decode import DecodeSpec
from actors.errors import WriterSessionError
from actors.messages import FrameBatch, PersonBatch
from actors.persons import PersonRequest, PersonStage, PersonWorker
from actors.session import DecodePoolWorker, DecodeRequest, DecodeSession
from actors.writer import StoreRequest, WriterWorker
from storage import ResumeState, StoreSpec, open_result
from storage.synthetic import synthetic_frame
from tests.unit.actors.test_decode import _write
from tests.unit.actors.test_person_stage import STRIDE, _batches, _boxes

SPEC = DecodeSpec(batch_size=4, stride=3)


def _pulled(worker: DecodePoolWorker, key: str, request: DecodeRequest) -> list[FrameBatch]:
    out = []
    while True:
        meta, batch = worker.next(key, request)
        out.append(batch)
        request = request.after(meta)
        if meta.is_last:
            return out


def _session_batches(source: Path) -> list[FrameBatch]:
    session, out = DecodeSession(SPEC, "j", str(source)), []
    while True:
        meta, batch = session.next()
        out.append(batch)
        if meta.is_last:
            return out


def _same_frames(a: list[FrameBatch], b: list[FrameBatch]) -> None:
    got = np.concatenate([x.source_index for x in a])
    want = np.concatenate([x.source_index for x in b])
    assert got.tolist() == want.tolist()
    np.testing.assert_array_equal(
        np.concatenate([x.frames for x in a]), np.concatenate([x.frames for x in b])
    )


def test_a_decode_member_serves_interleaved_jobs_as_if_each_ran_alone(tmp_path: Path) -> None:
    clip = _write(tmp_path / "a.mp4")
    alone = _session_batches(clip)
    worker = DecodePoolWorker()
    keys = {k: DecodeRequest(job_id="j", source=str(clip), spec=SPEC) for k in ("x/0", "y/0")}
    assert worker.probe("x/0", keys["x/0"]).width == 96
    got: dict[str, list[FrameBatch]] = {k: [] for k in keys}
    done: set[str] = set()
    while len(done) < len(keys):  # one batch of each job in turn
        for key in keys.keys() - done:
            meta, batch = worker.next(key, keys[key])
            got[key].append(batch)
            keys[key] = keys[key].after(meta)
            if meta.is_last:
                done.add(key)
    for key in keys:
        _same_frames(got[key], alone)
    assert worker.sessions() == 0  # a finished job's reader is gone


def test_a_job_that_moves_to_another_decode_member_continues_at_its_cursor(
    tmp_path: Path,
) -> None:
    clip = _write(tmp_path / "a.mp4")
    alone = _session_batches(clip)
    first, second = DecodePoolWorker(), DecodePoolWorker()
    request = DecodeRequest(job_id="j", source=str(clip), spec=SPEC)
    head = []
    for _ in range(2):
        meta, batch = first.next("j/0", request)
        head.append(batch)
        request = request.after(meta)
    assert request.start_index == int(head[-1].source_index[-1]) + 1
    tail = _pulled(second, "j/0", request)  # the new member has no reader: it reopens there
    _same_frames(head + tail, alone)


def test_a_decode_request_behind_the_cached_reader_reopens_at_its_index(tmp_path: Path) -> None:
    """A retried call (its first answer lost) asks again for a batch the reader has passed."""
    clip = _write(tmp_path / "a.mp4")
    worker = DecodePoolWorker()
    request = DecodeRequest(job_id="j", source=str(clip), spec=SPEC)
    _, first = worker.next("j/0", request)
    _, again = worker.next("j/0", request)
    _same_frames([again], [first])


def test_person_member_with_state_in_and_out_equals_one_job_stage() -> None:
    options = {"boxes_by_source_index": _boxes(12, gap_at=5)}
    batches = _batches(12, 4)
    stage = PersonStage("boxes", options)
    want = [stage.tracked(b) for b in batches]
    worker, state = PersonWorker(), None
    request = PersonRequest(detector="boxes", options=options)
    for batch, expected in zip(batches, want, strict=True):
        persons, state = worker(batch, request, state)
        np.testing.assert_array_equal(persons.track_id, expected.track_id)
        np.testing.assert_array_equal(persons.boxes, expected.boxes)
    assert state == stage.checkpoint()
    assert state.frames == 12 and state.next_source_index == 11 * STRIDE + 1


def test_a_person_member_places_the_detector_on_its_own_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``auto`` builds RT-DETR on the member's device (the CPU here, without a share of a
    GPU); ``cuda`` on a member without one fails at ``prepare``, before any frame is decoded.
    Random weights (``pretrained=False``): no download."""
    import torch

    from models.detect import DetectionError

    worker = PersonWorker()
    options = {"pretrained": False, "input_size": 128}
    worker.prepare(PersonRequest(detector="rtdetr", options={**options, "device": "auto"}))
    (built,) = worker._detectors.values()
    assert next(built._model.parameters()).device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DetectionError, match="no GPU"):
        worker.prepare(PersonRequest(detector="rtdetr", options={**options, "device": "cuda"}))


def test_person_batches_are_grouped_by_frame_with_ids_of_minus_one_or_more() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        PersonBatch(
            boxes=np.zeros((2, 4), np.float32),
            scores=np.ones(2, np.float32),
            frame=np.array([1, 0]),
            track_id=np.array([1, 2]),
        )
    with pytest.raises(ValueError, match="track_id >= -1"):
        PersonBatch(
            boxes=np.zeros((1, 4), np.float32),
            scores=np.ones(1, np.float32),
            frame=np.array([0]),
            track_id=np.array([-2]),
        )


STORE = StoreSpec(height=32, width=32, source_height=32, source_width=32, tasks=("pose",))
MODELS = [{"name": "tiny", "task": "pose", "checkpoint_sha256": None, "random_weights": True}]


def _open(worker: WriterWorker, key: str, url: str, resume: bool = False) -> int:
    request = StoreRequest(
        url=url, spec=STORE, job={"job_id": key}, source={}, models=MODELS, resume=resume
    )
    return worker.open(key, request)


def test_one_writer_member_commits_several_jobs_side_by_side(tmp_path: Path) -> None:
    worker = WriterWorker()
    urls = {f"job{i}/0": str(tmp_path / f"job{i}.zarr") for i in range(3)}
    for key, url in urls.items():
        assert _open(worker, key, url) == 0
    frames = [synthetic_frame(STORE, i, n_persons=1) for i in range(20)]

    def write(key: str) -> int:
        for start in range(0, 20, 5):
            state = ResumeState(frames=start + 5, next_source_index=start + 5, tracker={})
            worker.add(key, frames[start : start + 5], state)
        return worker.finalize(key, {"wall_s": 1.0})

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(write, urls)) == [20, 20, 20]
    assert worker.sessions() == 0
    for url in urls.values():
        reader = open_result(url)
        assert reader.status == "complete" and reader.num_frames == 20


def test_a_writer_member_refuses_a_job_it_never_opened(tmp_path: Path) -> None:
    worker = WriterWorker()
    with pytest.raises(WriterSessionError, match="not open"):
        worker.add("nobody/0", [synthetic_frame(STORE, 0, n_persons=1)])
    worker.fail("nobody/0", "no-op")  # nothing to mark: nothing happens


def test_a_job_resumes_its_store_on_another_writer_member(tmp_path: Path) -> None:
    url = str(tmp_path / "j.zarr")
    frames = [synthetic_frame(STORE, i, n_persons=1) for i in range(12)]
    first = WriterWorker()
    _open(first, "j/0", url)
    assert first.add("j/0", frames[:8], ResumeState(frames=8, next_source_index=8)) == 8
    second = WriterWorker()  # the first one died
    assert _open(second, "j/1", url, resume=True) == 8
    assert second.add("j/1", frames[4:12]) == 8  # frames below the watermark are dropped
    assert second.finalize("j/1") == 12
    assert open_result(url).num_frames == 12


def test_session_cache_keeps_a_keys_calls_in_order_and_drops_idle_entries() -> None:
    dropped: list[str] = []
    cache: SessionCache[str] = SessionCache(idle_s=0.05, on_drop=dropped.append)
    order: list[int] = []
    gate = threading.Event()

    def slow() -> None:
        with cache.session("k") as entry:
            entry.value = "open"
            gate.wait(5)
            order.append(1)

    thread = threading.Thread(target=slow)
    thread.start()
    while len(cache) == 0:
        pass

    def second() -> None:
        with cache.session("k") as entry:
            assert entry.value == "open"  # the first call's object, once it is done
            order.append(2)

    blocked = threading.Thread(target=second)
    blocked.start()
    gate.set()
    thread.join()
    blocked.join(5)
    assert order == [1, 2]
    assert cache.pop("k") == "open"
    with cache.session("idle") as entry:
        entry.value = "reader"
    threading.Event().wait(0.1)
    with cache.session("other"):
        pass  # starting any session drops entries idle longer than idle_s
    assert dropped == ["reader"] and len(cache) == 0


def _open_fds(path: Path) -> int:
    """File descriptors of this process open on ``path``."""
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # closed while listing
            count += Path(os.readlink(fd)) == path
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_decode_member_closes_the_readers_it_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader the member replaces (a request elsewhere), closes (the job went) or drops for
    idling closes its file at once, even while something else still refers to it (here the
    test keeps every session it made, as a traceback or a pending result could)."""
    import actors.session as session_mod

    made: list[DecodeSession] = []
    real = session_mod._session

    def keep(request: DecodeRequest) -> DecodeSession:
        made.append(real(request))
        return made[-1]

    monkeypatch.setattr(session_mod, "_session", keep)
    clip = _write(tmp_path / "a.mp4").resolve()
    worker = DecodePoolWorker()
    request = DecodeRequest(job_id="j", source=str(clip), spec=SPEC)
    worker.probe("j/0", request)
    meta, _ = worker.next("j/0", request)  # the reader opens the file at its first batch
    assert not meta.is_last and _open_fds(clip) == 1
    worker.next("j/0", replace(request, start_index=0))  # behind the reader: reopened
    assert _open_fds(clip) == 1
    worker.close("j/0")
    assert _open_fds(clip) == 0
    idle = DecodePoolWorker()
    idle._open = SessionCache(idle_s=0.0, on_drop=DecodeSession.close)
    idle.probe("k/0", request)
    idle.next("k/0", request)
    assert _open_fds(clip) == 1
    idle.probe("other/0", request)  # starting a session drops the idle one
    assert _open_fds(clip) == 0
    assert len(made) >= 4
