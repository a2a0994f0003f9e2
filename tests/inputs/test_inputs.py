"""Malformed and unusual inputs: every one fails with a specific error naming the source, or
delivers the frames that decode and counts the rest as corrupt; the service survives them all.

The inputs are written at test time by ``tests/inputs/generate.py``. The decode-level tests run
``DecodeSession`` in this process; the end-to-end test submits every bad input (and the unusual
ones whose frames differ past the decoder, see ``Case.service``) to one ``JobService`` on a
local Ray cluster with its own embedded Redis-compatible server.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from actors.decode import DecodeSpec
from actors.messages import FrameBatch, VideoInfo
from actors.session import DecodeSession
from media import display_name
from media.errors import DecodeError, MediaError
from tests.inputs.generate import Case

CASE_NAMES = [
    "plain_clip",  # the control
    # unreadable: a specific error naming the source
    "zero_bytes", "text_renamed_mp4", "truncated_in_header_mkv", "truncated_before_index_mp4",
    "truncated_inside_index_mp4", "truncated_in_first_frame_mkv", "no_frames_avi", "audio_only",
    "cover_art_only", "unknown_codec_avi", "all_packets_overwritten", "huge_declared_y4m",
    "huge_declared_jpeg", "missing_file", "directory", "unsupported_scheme",
    # damaged: the frames that decode come out, the others are counted
    "truncated_mid_stream_mkv", "truncated_mid_stream_mp4", "corrupt_packets_mid_stream",
    "corrupt_last_packet", "huge_declared_mid_stream", "garbage_appended",
    # unusual but valid: every frame, upright RGB
    "odd_size_33x17", "odd_size_33x17_ffv1", "tiny_2x2", "tiny_16x16",
    "huge_declared_avi_header", "resolution_change", "rotation_displaymatrix",
    "rotation_displaymatrix_mkv", "rotate_tag_legacy", "variable_frame_rate",
    "ten_bit_yuv420p10le", "gray", "rgb24", "yuv444p", "two_video_streams", "single_frame",
    "non_ascii_name", "y4m_rawvideo",
    # over the default resource limits: a specific error before the frames are used
    "huge_frame_12000_mkv", "frame_grows_past_limit_mid_stream",
    # network
    "url_connection_refused", "url_never_answers", "url_not_found", "url_stalls_mid_body",
    "url_ok",
]  # fmt: skip


def test_the_generator_writes_every_case_small(input_cases: dict[str, Case]) -> None:
    assert list(input_cases) == CASE_NAMES
    assert len(input_cases) >= 20
    for case in input_cases.values():
        path = Path(case.source)
        if path.is_file():
            assert path.stat().st_size < case.max_bytes, f"{case.name}: keep generated inputs small"
        assert (case.error is None) != (case.frames is None), case.name


# -- decode level --------------------------------------------------------------------------------


def _decode(case: Case, **spec: Any) -> tuple[VideoInfo, list[FrameBatch]]:
    session = DecodeSession(
        DecodeSpec(**{"batch_size": 4, **case.spec, **spec}), "job", case.source
    )
    batches: list[FrameBatch] = []
    while True:
        meta, batch = session.next()
        assert (meta.frames, meta.is_last, meta.n_corrupt) == (
            len(batch),
            batch.is_last,
            batch.n_corrupt,
        )
        batches.append(batch)
        if meta.is_last:
            return session.info, batches


@pytest.mark.parametrize("name", CASE_NAMES)
def test_decode_outcome(input_cases: dict[str, Case], name: str) -> None:
    case = input_cases[name]
    if case.error is not None:
        _assert_clear_error(case)
    else:
        _assert_frames(case)


def _assert_clear_error(case: Case) -> None:
    assert case.error is not None
    began = time.monotonic()
    with pytest.raises(DecodeError) as raised:
        _decode(case)
    took = time.monotonic() - began
    error = raised.value
    message = str(error)
    assert type(error) is case.error, f"{case.name}: {type(error).__name__}: {message}"
    assert isinstance(error, MediaError) and not isinstance(error, av.error.FFmpegError)
    assert display_name(case.source) in message, f"the message must name the source: {message}"
    assert re.search(case.match, message, re.IGNORECASE), f"{case.match!r} not in {message!r}"
    assert "Traceback" not in message and "\n" not in message
    assert took < case.max_seconds, f"{case.name}: took {took:.1f} s"


def _assert_frames(case: Case) -> None:
    """One decoder thread gives exact counts; frame threads may count more frames as corrupt
    on damaged input, but every frame slot is either delivered or counted. Every selected slot
    whose frame is corrupt comes out too, as a black row flagged ``corrupt``."""
    assert case.frames is not None and case.shape is not None
    for threads in (1, 0):
        info, batches = _decode(case, threads=threads)
        flags = np.concatenate([b.corrupt for b in batches])
        where = f"{case.name} (threads={threads})"
        rows = np.concatenate([b.frames for b in batches])
        assert not rows[flags].any(), f"{where}: a corrupt row has pixels"
        if not {"stride", "target_fps", "start_s", "end_s"} & case.spec.keys():
            # Every slot is selected: every counted one is a corrupt row.
            assert flags.sum() == sum(b.n_corrupt for b in batches), where
        frames = rows[~flags]
        index = np.concatenate([b.source_index for b in batches])[~flags]
        times = np.concatenate([b.time_s for b in batches])[~flags]
        corrupt = sum(b.n_corrupt for b in batches)
        assert frames.shape[1:] == (*case.shape, 3) and frames.dtype == np.uint8, where
        assert (info.height, info.width) == case.shape and info.rotation == case.rotation, where
        assert len(frames) + corrupt == case.expected_slots, f"{where}: {len(frames)} + {corrupt}"
        assert np.all(np.diff(index) > 0) and (len(index) == 0 or index[-1] < case.expected_slots)
        assert (corrupt > 0) == case.corrupt, f"{where}: {corrupt} corrupt"
        if threads == 1 or not case.corrupt:
            assert len(frames) == case.frames, f"{where}: {len(frames)} frames"
        if case.reference is not None and case.intact is not None:
            # By display position (from pts): near a failed packet, frames still in the
            # decoder's reorder buffer come out after its slot, with a later index.
            assert info.time_source == "pts" and info.fps, where
            shown = np.rint(times * info.fps).astype(np.int64)
            kept = shown < case.intact
            if threads == 1:
                assert kept.sum() == case.intact, f"{where}: undamaged frames missing"
            error = np.abs(frames[kept].astype(np.float64) - case.reference[shown[kept]])
            assert error.mean() <= case.tolerance, f"{where}: mean abs error {error.mean():.1f}"
        elif case.reference is not None:
            error = np.abs(frames.astype(np.float64) - case.reference)
            assert error.mean() <= case.tolerance, f"{where}: mean abs error {error.mean():.1f}"
        if case.times is not None:
            np.testing.assert_allclose(times, case.times, atol=1e-9)


def test_corrupt_frames_are_counted_in_the_batch_where_they_occur(
    input_cases: dict[str, Case],
) -> None:
    """The damage of ``corrupt_packets_mid_stream`` is reported before its last batch."""
    _, batches = _decode(input_cases["corrupt_packets_mid_stream"], threads=1)
    counts = [b.n_corrupt for b in batches]
    assert sum(counts[:-1]) == 3, counts


# -- end to end ----------------------------------------------------------------------------------

SERVICE_TIMEOUT_S = 240  # a loaded CI machine; about 60 s on a quiet 2-core one


@contextmanager
def _serving(coord: Any, **options: Any) -> Iterator[tuple[Any, threading.Thread]]:
    """A JobService consuming the queue in a background thread for the block's duration."""
    from flows.service import JobService

    stop = threading.Event()
    service = JobService(coord, **options)
    thread = threading.Thread(target=service.serve, kwargs={"until": stop.is_set}, daemon=True)
    thread.start()
    try:
        yield service, thread
    finally:
        stop.set()
        thread.join(timeout=60)


def _submit(coord: Any, source: str, job_id: str, root: Path) -> None:
    from flows.spec import JobSpec

    spec = JobSpec.from_dict(
        {"source": source, "job_id": job_id, "output_root": str(root), "max_side": 32,
         "batch_size": 4}
    )  # fmt: skip
    coord.submit(spec.to_dict(), job_id=job_id)


def _wait(coord: Any, job_ids: list[str], timeout: float = SERVICE_TIMEOUT_S) -> None:
    from storage import TERMINAL_STATES

    deadline = time.monotonic() + timeout
    while True:
        states = {j: coord.get(j).state for j in job_ids}
        if all(s in TERMINAL_STATES for s in states.values()):
            return
        assert time.monotonic() < deadline, {j: s for j, s in states.items() if s != "succeeded"}
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served(
    ray_cluster: Any, input_cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The plain clip, then every service case at once, then the plain clip again, through one
    ``JobService``; the job records, the committed frames of each store, how many Sapiens
    actors the service's pool created before and after the last job, and whether the service
    loop was still running at the end."""
    from storage import Coordinator, connect, open_result
    from storage.embedded import EmbeddedServer

    root = tmp_path_factory.mktemp("served")
    server = EmbeddedServer.ensure(root / "redis")  # this test's own, whatever the environment
    conn = connect(server.url)
    coord = Coordinator(conn.client)
    good = input_cases["plain_clip"].source
    jobs = [c.name for c in input_cases.values() if c.service]
    try:
        with _serving(coord, max_jobs=6, worker_id="inputs") as (service, thread):
            _submit(coord, good, "good-before", root)
            _wait(coord, ["good-before"])
            for name in jobs:
                _submit(coord, input_cases[name].source, name, root)
            _wait(coord, jobs)
            created_before_last = service.pool.created
            _submit(coord, good, "good-after", root)
            _wait(coord, ["good-after"])
            records = {j: coord.get(j) for j in ["good-before", *jobs, "good-after"]}
            created_after_last = service.pool.created
            serving = thread.is_alive()
        tables = {
            j: open_result(f"{root}/{j}.zarr").read_frames()
            for j, r in records.items()
            if r.state == "succeeded"
        }
        stores = {j: len(t) for j, t in tables.items()}
        statuses = {j: t.statuses() for j, t in tables.items()}
    finally:
        conn.close()
        server.close()
    return {
        "records": records,
        "stores": stores,
        "statuses": statuses,
        "created": (created_before_last, created_after_last),
        "serving": serving,
    }


@pytest.mark.ray
@pytest.mark.redis
def test_service_survives_every_bad_input(
    served: dict[str, Any], input_cases: dict[str, Case]
) -> None:
    records = served["records"]
    for job in ("good-before", "good-after"):
        assert records[job].state == "succeeded", records[job].error
        assert records[job].committed_frames == served["stores"][job] == 24
    # the service loop never stopped, and one shared Sapiens actor, created for the first job,
    # served every job to the last one (a dead member would have been replaced by a new one)
    assert served["serving"]
    assert served["created"] == (1, 1)
    for case in input_cases.values():
        if not case.service:
            continue
        record = records[case.name]
        if case.error is not None:
            reason = str((record.error or {}).get("reason", ""))
            assert record.state == "failed", f"{case.name}: {record.state}"
            assert case.error.__name__ in reason, f"{case.name}: {reason}"
            assert display_name(case.source) in reason, f"{case.name}: {reason}"
            assert re.search(case.match, reason, re.IGNORECASE), f"{case.name}: {reason}"
        else:
            assert record.state == "succeeded", f"{case.name}: {record.error}"
            committed = record.committed_frames
            assert committed == served["stores"][case.name], case.name
            statuses = served["statuses"][case.name]
            ok = statuses.count("ok")
            if case.corrupt:  # frame threads may lose more of a damaged file than one thread
                assert 1 <= ok < case.expected_slots, f"{case.name}: {ok}"
                # The damaged slots are in the store, marked: nothing vanished silently.
                assert "corrupt" in statuses and committed <= case.expected_slots, case.name
            else:
                assert committed == ok == case.frames, f"{case.name}: {committed}"


_TRACEBACK = re.compile(r"Traceback|File \"|\x1b\[|\n")


@pytest.mark.ray
@pytest.mark.redis
def test_failed_jobs_record_the_decode_error_alone(
    served: dict[str, Any], input_cases: dict[str, Case]
) -> None:
    for case in input_cases.values():
        if case.service and case.error is not None:
            reason = str((served["records"][case.name].error or {}).get("reason", ""))
            assert not _TRACEBACK.search(reason), reason
            assert f"{case.error.__name__}: " in reason, reason


@pytest.mark.ray
@pytest.mark.redis
def test_records_count_the_decoded_frames(
    served: dict[str, Any], input_cases: dict[str, Case]
) -> None:
    records = served["records"]
    assert records["good-after"].counters.get("decoded_frames") == 24
    for case in input_cases.values():
        if case.service and case.frames is not None and not case.corrupt:
            assert records[case.name].counters.get("decoded_frames") == case.frames, case.name
