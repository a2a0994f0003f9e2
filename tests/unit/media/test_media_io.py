"""media/: the one output-size rule, and a video written by ``VideoWriter`` read back by
``read_frames`` (the pair that demo and render use)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from media import SourceNotFoundError, VideoWriter, output_size, read_frames

CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((720, 1280), None, (720, 1280)),
        ((720, 1280), 640, (360, 640)),
        ((1280, 720), 640, (640, 360)),  # (height, width) in, the same order out
        ((720, 1280), 2000, (720, 1280)),  # never scaled up
        ((33, 17), 16, (16, 8)),
        ((1, 1000), 16, (1, 16)),  # at least one pixel
    ],
)
def test_output_size_keeps_height_width_order(
    size: tuple[int, int], max_side: int | None, expected: tuple[int, int]
) -> None:
    assert output_size(*size, max_side=max_side) == expected


def _levels(n: int) -> list[np.ndarray]:
    return [np.full((48, 64, 3), 20 + 30 * i, np.uint8) for i in range(n)]


def test_written_frames_read_back_in_decode_order(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=25.0, codec=CODEC) as sink:
        for rgb in _levels(6):
            sink.write(rgb)
    read = list(read_frames(path, stride=2))
    assert [index for index, _ in read] == [0, 2, 4]
    for (index, rgb), want in zip(read, _levels(6)[::2], strict=True):
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        assert abs(float(rgb.mean()) - float(want.mean())) < 6, index
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 25


def test_read_frames_probes_before_returning(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="no such file"):
        read_frames(tmp_path / "missing.mp4")
