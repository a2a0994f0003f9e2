"""Tests for models.track: ByteTrack-style association, track lifetime and resumable state."""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextlib import nullcontext as does_not_raise
from typing import Any

import msgpack
import numpy as np
import pytest

from models.detect import Detections
from models.errors import ModelError
from models.track import Tracker, TrackerConfig, TrackingError

Box = list[float]


def _dets(rows: list[tuple[Box, float]]) -> Detections:
    return Detections(
        boxes_xyxy=np.asarray([b for b, _ in rows], np.float32).reshape(-1, 4),
        scores=np.asarray([s for _, s in rows], np.float32),
        frame=np.zeros(len(rows), np.int64),
    )


def _walker_a(f: int) -> Box:
    """50 x 100, walking right 10 px per frame."""
    return [50.0 + 10 * f, 100.0, 100.0 + 10 * f, 200.0]


def _walker_b(f: int) -> Box:
    """60 x 120, walking left 10 px per frame: crosses A around frame 18."""
    return [400.0 - 10 * f, 120.0, 460.0 - 10 * f, 240.0]


def _walker_c(f: int) -> Box:
    """Far right, drifting 3 px per frame."""
    return [800.0 + 3 * f, 50.0, 850.0 + 3 * f, 150.0]


B_DIMS = {11, 12, 19, 26}  # frames where B is a low-score detection (second-stage matches)


def _scene(frames: int, c_missing: range, d_from: int) -> list[list[tuple[Box, float]]]:
    """A and B cross; B dims at times; C is missing in ``c_missing``; D appears at ``d_from``."""
    scene = []
    for f in range(frames):
        rows = [(_walker_a(f), 0.9), (_walker_b(f), 0.35 if f in B_DIMS else 0.85)]
        if f not in c_missing:
            rows.append((_walker_c(f), 0.8))
        if f >= d_from:
            rows.append(([600.0, 400.0, 660.0, 520.0], 0.95))
        scene.append(rows)
    return scene


SCENE = _scene(36, c_missing=range(10, 14), d_from=20)


def _run(tracker: Tracker, scene: list[list[tuple[Box, float]]], start: int = 0) -> list[list[int]]:
    return [tracker.update(_dets(rows), start + i).tolist() for i, rows in enumerate(scene)]


def test_crossing_people_keep_their_ids_and_a_returning_one_too() -> None:
    tracker = Tracker(TrackerConfig(max_age=5))
    for f, rows in enumerate(SCENE):
        # Odd frames list the persons in reverse: ids follow the boxes, not the row order.
        step = -1 if f % 2 else 1
        ids = tracker.update(_dets(rows[::step]), f).tolist()[::step]
        expected = [1, 2]
        if f not in range(10, 14):
            expected.append(3)  # C: unmatched for 4 frames <= max_age, same id when back
        if f >= 20:
            expected.append(4)  # D: a new person, a new id
        assert ids == expected, f"frame {f}"


def test_boxes_overlap_while_crossing() -> None:
    # The scene really tests association: at the crossing A and B overlap heavily.
    a, b = np.array(_walker_a(18)), np.array(_walker_b(18))
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    assert inter / (50 * 100) > 0.5


def test_a_track_lost_for_more_than_max_age_is_replaced_by_a_new_id() -> None:
    scene = _scene(20, c_missing=range(5, 12), d_from=99)  # C away 7 frames > max_age 5
    ids = _run(Tracker(TrackerConfig(max_age=5)), scene)
    assert ids[4] == [1, 2, 3]
    assert ids[12] == [1, 2, 4]
    assert ids[19] == [1, 2, 4]


def test_low_score_detections_continue_tracks_but_start_or_revive_none() -> None:
    tracker = Tracker(TrackerConfig(max_age=5))
    assert tracker.update(_dets([(_walker_a(0), 0.9)]), 0).tolist() == [1]
    # A dims to 0.3 (second stage keeps it); a lone weak box elsewhere gets no track.
    weak = _dets([(_walker_a(1), 0.3), ([700.0, 0.0, 740.0, 90.0], 0.3)])
    assert tracker.update(weak, 1).tolist() == [1, -1]
    assert tracker.update(_dets([]), 2).tolist() == []  # A is now lost (missed one update)
    assert tracker.update(_dets([(_walker_a(3), 0.3)]), 3).tolist() == [-1]  # weak: no revival
    assert tracker.update(_dets([(_walker_a(4), 0.9)]), 4).tolist() == [1]  # strong: revived
    # Below low_score: ignored; between high_score and new_track_score: no new track.
    rows = [(_walker_a(5), 0.05), ([700.0, 0.0, 740.0, 90.0], 0.55)]
    assert tracker.update(_dets(rows), 5).tolist() == [-1, -1]
    assert tracker.track_ids.tolist() == [1]


def test_frame_gaps_use_the_motion_model() -> None:
    # Four consecutive frames give A's velocity (10 px/frame); then only every 6th frame:
    # A jumps 60 px between updates, more than its 50 px width, so only the prediction
    # (velocity x frame gap) still overlaps it.
    tracker = Tracker()
    frames = [0, 1, 2, 3, 9, 15, 21, 27]
    ids = [tracker.update(_dets([(_walker_a(f), 0.9)]), f).tolist() for f in frames]
    assert ids == [[1]] * len(frames)
    fresh = Tracker()
    fresh.update(_dets([(_walker_a(0), 0.9)]), 0)
    assert fresh.update(_dets([(_walker_a(6), 0.9)]), 6).tolist() == [2]  # no velocity yet


@pytest.mark.parametrize("cut", [1, 11, 18, 19, 26, 35])
def test_restored_tracker_gives_the_same_ids_as_an_uninterrupted_one(cut: int) -> None:
    config = TrackerConfig(max_age=5)
    uninterrupted = Tracker(config)
    expected = _run(uninterrupted, SCENE)
    first = Tracker(config)
    got = _run(first, SCENE[:cut])
    wire = msgpack.packb(first.state())
    restored = Tracker.from_state(msgpack.unpackb(wire))
    got += _run(restored, SCENE[cut:], start=cut)
    assert got == expected
    assert restored.state() == uninterrupted.state()


def _plain(value: object) -> bool:
    """Only ints, floats, strings, lists and dicts (bool excluded), recursively."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (int, float, str)


def test_state_is_plain_and_msgpack_round_trips_exactly() -> None:
    tracker = Tracker(TrackerConfig(max_age=5))
    _run(tracker, SCENE[:12])
    state = tracker.state()
    assert _plain(state)
    assert msgpack.unpackb(msgpack.packb(state)) == state
    assert state["version"] == 1
    assert state["last_frame"] == 11
    assert [t["id"] for t in state["tracks"]] == [1, 2, 3]
    assert Tracker().state()["tracks"] == []


@pytest.mark.parametrize("frame_index", [3, 4, -1, 4.5, True])
def test_frame_index_must_increase(frame_index: Any) -> None:
    tracker = Tracker()
    tracker.update(_dets([]), 4)
    with pytest.raises(TrackingError, match="frame_index: expected an int"):
        tracker.update(_dets([]), frame_index)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(version=2), "expected version 1, got 2"),
        (lambda s: s.pop("next_id"), "malformed.*next_id"),
        (lambda s: s["tracks"][0].pop("velocity"), "malformed.*velocity"),
        (lambda s: s["tracks"][0].update(box=[1.0, 2.0]), "malformed"),
        (lambda s: s["config"].update(max_agee=3), r"unknown key\(s\) \['max_agee'\]"),
    ],
)
def test_from_state_rejects_bad_states(mutate: Any, match: str) -> None:
    tracker = Tracker()
    tracker.update(_dets([(_walker_a(0), 0.9)]), 0)
    state = tracker.state()
    mutate(state)
    with pytest.raises(TrackingError, match=match):
        Tracker.from_state(state)


@pytest.mark.parametrize(
    ("options", "expectation"),
    [
        ({}, does_not_raise()),
        (
            {"match_iou": 0.0},
            pytest.raises(TrackingError, match=r"match_iou: expected .* \(0, 1\]"),
        ),
        ({"high_score": 0.7}, pytest.raises(TrackingError, match="low_score <= high_score")),
        ({"max_age": -1}, pytest.raises(TrackingError, match="max_age: expected an int >= 0")),
    ],
)
def test_tracker_config(
    options: dict[str, Any], expectation: AbstractContextManager[object]
) -> None:
    with expectation:
        config = TrackerConfig(**options)
        assert TrackerConfig.from_dict(config.to_dict()) == config


def test_tracking_error_is_a_model_error_and_a_value_error() -> None:
    assert issubclass(TrackingError, ModelError)
    assert issubclass(TrackingError, ValueError)
