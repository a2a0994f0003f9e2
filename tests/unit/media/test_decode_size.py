"""media/: frames decoded at a reduced size (``SizeFloor``) are converted at that size only,
show the same picture at the same place, and frames that sampling drops are never converted."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import media._reader
from media import Sampler, SizeFloor, VideoReader, probe_video
from tests.inputs.boxclip import bright_box, write_clip


def read(path: Path, **probe: Any) -> tuple[Any, list[tuple[int, np.ndarray]]]:
    info = probe_video(path, threads=1, open_timeout_s=10, read_timeout_s=10, **probe)
    reader = VideoReader(path, info, threads=1)
    return info, [(f.index, f.rgb()) for f in reader]


@pytest.mark.parametrize(
    ("floor", "size", "expected", "raises"),
    [
        ({"height": 256, "width": 192, "side": 640}, (1080, 1920), (360, 640), does_not_raise()),
        ({"height": 1024, "width": 768, "side": 640}, (1080, 1920), (1024, 1821), does_not_raise()),
        ({"height": 1024, "width": 768, "side": 640}, (720, 1280), (720, 1280), does_not_raise()),
        ({"height": 640, "width": 640, "side": 640}, (1920, 1080), (1138, 640), does_not_raise()),
        ({"side": 100}, (721, 1283), (57, 100), does_not_raise()),  # ceil: never under
        ({"side": 5000}, (720, 1280), (720, 1280), does_not_raise()),  # never up
        ({"height": 0}, (720, 1280), None, pytest.raises(ValueError, match=r"height: .* >= 1")),
        ({"side": True}, (720, 1280), None, pytest.raises(ValueError, match=r"side: .*True")),
    ],
)
def test_size_floor_is_the_smallest_size_at_or_above_the_floor(
    floor: dict[str, Any], size: tuple[int, int], expected: tuple[int, int] | None, raises: Any
) -> None:
    with raises:
        got = SizeFloor(**floor).size(*size)
        assert got == expected
        h, w = got
        assert h >= min(size[0], floor.get("height", 1))
        assert w >= min(size[1], floor.get("width", 1))
        assert max(h, w) >= min(max(size), floor.get("side", 1))
        assert abs(h / w - size[0] / size[1]) < 2 / min(h, w)  # one factor for both sides


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The (H, W) of every frame the reader converts to RGB, in order."""
    seen: list[tuple[int, int]] = []
    convert: Callable[..., None] = media._reader.to_rgb

    def counting(frame: av.VideoFrame, out: np.ndarray, **kw: Any) -> None:
        seen.append(out.shape[:2])
        convert(frame, out, **kw)

    monkeypatch.setattr(media._reader, "to_rgb", counting)
    return seen


def test_a_floor_converts_every_frame_at_the_reduced_size_only(
    tmp_path: Path, conversions: list[tuple[int, int]]
) -> None:
    path = write_clip(tmp_path / "clip.mp4", width=640, height=360, n=6)
    info, frames = read(path, max_side=None, floor=SizeFloor(height=90, width=64, side=200))
    assert (info.height, info.width) == (113, 200)  # height 360 * 200/640, rounded up
    assert (info.source_height, info.source_width) == (360, 640)
    assert info.full_size == (360, 640)
    assert [rgb.shape for _, rgb in frames] == [(113, 200, 3)] * 6
    assert conversions == [(113, 200)] * 6  # swscale wrote the reduced size, nothing larger


@pytest.mark.parametrize("rotation", [None, 90])
def test_reduced_frames_show_the_box_where_the_full_frames_do(
    tmp_path: Path, rotation: int | None
) -> None:
    """The same picture, scaled: box edges agree within a source pixel after scaling back."""
    path = write_clip(tmp_path / "clip.mp4", width=640, height=360, n=6, rotation=rotation)
    full_info, full = read(path, max_side=None)
    small_info, small = read(path, max_side=None, floor=SizeFloor(side=256))
    assert full_info.full_size == small_info.full_size == (full_info.height, full_info.width)
    assert max(small_info.height, small_info.width) == 256
    sy = full_info.height / small_info.height
    sx = full_info.width / small_info.width
    assert [i for i, _ in small] == [i for i, _ in full] == list(range(6))
    for (i, big), (_, little) in zip(full, small, strict=True):
        want = bright_box(big)
        got = bright_box(little) * np.array([sx, sy, sx, sy])
        assert np.abs(got - want).max() <= 1.0, (i, got, want)


def test_frames_that_sampling_drops_are_never_converted(
    tmp_path: Path, conversions: list[tuple[int, int]]
) -> None:
    path = write_clip(tmp_path / "clip.mp4", width=320, height=180, n=10)
    info = probe_video(path, max_side=None, threads=1, open_timeout_s=10, read_timeout_s=10)
    conversions.clear()  # the probe converts nothing either, but start from zero
    sampler = Sampler(stride=3, target_fps=None, start_s=0.0, end_s=None)
    reader = VideoReader(path, info, sampler=sampler, threads=1)
    kept = [frame.index for frame in reader if frame.rgb() is not None]
    assert kept == [0, 3, 6, 9]
    assert len(conversions) == 4
