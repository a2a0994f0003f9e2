"""JobSpec validation and round trip."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise

import msgpack
import pytest

from flows.errors import SpecError
from flows.spec import JobSpec


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
