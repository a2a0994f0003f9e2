"""Resource limits of the decode stage: frame pixels and the dense maps of a batch, checked
before the frames they concern are decoded, converted or sent on.

Inputs are flat grey MJPEG frames muxed as hand-written JPEG packets, so even a 12000 x 12000
frame is a 550 KB file that is never held in memory by the test.
"""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any

import pytest

from actors.decode import DecodeLimits, DecodeSpec, DecodeWorker
from actors.errors import InvalidDecodeSpecError, ResourceLimitError
from actors.session import DecodeSession
from media import _probe, _reader
from tests.inputs.mjpeg import mjpeg_mkv

SMALL = (64, 48)


def _assert_one_line(message: str, *parts: str) -> None:
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_default_limits_refuse_a_12000_frame_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mjpeg_mkv(tmp_path / "huge.mkv", [(12000, 12000)])

    def no_decoding(*args: Any) -> None:
        raise AssertionError("a frame was decoded before the size was checked")

    monkeypatch.setattr(_probe, "_decode_window", no_decoding)
    with pytest.raises(ResourceLimitError) as raised:
        DecodeWorker(DecodeSpec()).probe(path)
    _assert_one_line(
        str(raised.value),
        repr(str(path)),
        "12000x12000 (144,000,000 pixels)",
        "limit of 33,177,600 pixels per frame",
        "raise limits.max_pixels",
    )
    assert isinstance(raised.value, ValueError)
    with pytest.raises(ResourceLimitError):
        DecodeSession(DecodeSpec(), "job", str(path))


def test_a_frame_over_the_limit_mid_stream_raises_before_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame 20 is past the probe's window: the decode itself must refuse it."""
    path = mjpeg_mkv(tmp_path / "grows.mkv", [SMALL] * 20 + [(128, 96)])
    converted: list[tuple[int, int]] = []
    to_rgb = _reader.to_rgb

    def recording(frame: Any, out: Any, **kwargs: Any) -> None:
        converted.append((frame.width, frame.height))
        to_rgb(frame, out, **kwargs)

    monkeypatch.setattr(_reader, "to_rgb", recording)
    spec = DecodeSpec(batch_size=4, limits=DecodeLimits(max_pixels=64 * 48))
    batches = DecodeWorker(spec).batches("job", path)
    emitted = []
    with pytest.raises(ResourceLimitError) as raised:
        for batch in batches:
            emitted += batch.source_index.tolist()
    _assert_one_line(
        str(raised.value),
        "frame 20 is 128x96 (12,288 pixels)",
        "limit of 3,072 pixels",
        "limits.max_pixels",
    )
    assert converted == [SMALL] * 20  # frames 16-19 wait in a full batch for a next frame
    assert emitted == list(range(16))


def test_a_frame_over_the_limit_in_the_probe_window(tmp_path: Path) -> None:
    path = mjpeg_mkv(tmp_path / "grows_early.mkv", [SMALL] * 3 + [(128, 96)] + [SMALL] * 3)
    spec = DecodeSpec(limits=DecodeLimits(max_pixels=64 * 48))
    with pytest.raises(ResourceLimitError, match=r"frame 3 is 128x96 .*limits\.max_pixels"):
        DecodeWorker(spec).probe(path)


def test_frames_at_the_limit_decode(tmp_path: Path) -> None:
    path = mjpeg_mkv(tmp_path / "small.mkv", [SMALL] * 5)
    spec = DecodeSpec(limits=DecodeLimits(max_pixels=64 * 48))
    assert sum(len(b) for b in DecodeWorker(spec).batches("job", path)) == 5


@pytest.mark.parametrize(
    ("limits", "batch_size", "expectation"),
    [
        # 64 x 48 x 25 bytes x 8 frames = 614,400 bytes
        ({"max_map_bytes": 614_400}, 8, does_not_raise()),
        (
            {"max_map_bytes": 614_399},
            8,
            pytest.raises(
                ResourceLimitError,
                match=r"a batch of 8 frames needs 600\.0 KiB \(614,400 bytes\) of dense maps at "
                r"64x48 \(25 bytes per pixel\), over the limit of .*; set max_side, lower "
                r"batch_size or raise limits\.max_map_bytes",
            ),
        ),
        ({"max_map_bytes": 614_399}, 7, does_not_raise()),
        ({"max_map_bytes": 614_399, "map_max_side": 32}, 8, does_not_raise()),  # 32 x 24 maps
        ({"max_map_bytes": 1, "map_bytes_per_pixel": 0}, 8, does_not_raise()),  # no dense task
    ],
)
def test_dense_map_budget_is_checked_at_probe(
    tmp_path: Path, limits: dict[str, int], batch_size: int, expectation: Any
) -> None:
    path = mjpeg_mkv(tmp_path / "clip.mkv", [SMALL] * 2)
    spec = DecodeSpec(
        batch_size=batch_size, limits=DecodeLimits(**{"map_bytes_per_pixel": 25, **limits})
    )
    with expectation:
        DecodeSession(spec, "job", str(path))


@pytest.mark.parametrize(
    ("raw", "expectation"),
    [
        ({"limits": {"max_pixels": 100, "max_map_bytes": None}}, does_not_raise()),
        ({"limits": {"max_pixels": None, "map_max_side": 64}}, does_not_raise()),
        ({"limits": {"max_pixel": 100}}, pytest.raises(InvalidDecodeSpecError, match="valid")),
        ({"limits": {"max_pixels": 0}}, pytest.raises(InvalidDecodeSpecError, match="max_pixels")),
        (
            {"limits": {"map_bytes_per_pixel": True}},
            pytest.raises(InvalidDecodeSpecError, match="map_bytes_per_pixel"),
        ),
        ({"limits": 5}, pytest.raises(InvalidDecodeSpecError, match="DecodeLimits")),
    ],
)
def test_limits_round_trip_and_validation(raw: dict[str, Any], expectation: Any) -> None:
    with expectation:
        spec = DecodeSpec.from_dict(raw)
        assert DecodeSpec.from_dict(spec.to_dict()) == spec
