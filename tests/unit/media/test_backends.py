"""media/: which decoder reads a source (``choose_backend``), and torchcodec (when it loads:
``pip install 'sapiens-stream[gpu-decode]'``, forced onto its CPU device) giving the frames,
indices, pts and times PyAV gives, decoding only the frames that sampling keeps."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import media._torchcodec
from actors.decode import DecodeSpec, DecodeWorker
from actors.errors import InvalidDecodeSpecError
from media import (
    SizeFloor,
    TorchcodecUnavailableError,
    UnsupportedBackendError,
    VideoInfo,
    choose_backend,
    probe_video,
    torchcodec_error,
)
from tests.inputs.boxclip import bright_box, write_clip

MISSING = torchcodec_error()
needs_torchcodec = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

INFO = VideoInfo(
    source="clip.mp4",
    container="mp4",
    codec="h264",
    source_width=64,
    source_height=48,
    width=64,
    height=48,
    fps=25.0,
    time_base=None,
    duration_s=1.0,
    frame_count_hint=25,
    rotation=0,
    mirrored=False,
    time_source="pts",
    start_pts=0,
    seekable=True,
)


@pytest.mark.parametrize(
    ("asked", "loads", "cuda", "info", "source", "expected", "raises"),
    [
        ("pyav", True, True, INFO, "clip.mp4", "pyav", does_not_raise()),
        ("auto", True, True, INFO, "clip.mp4", "torchcodec-cuda", does_not_raise()),
        ("auto", True, False, INFO, "clip.mp4", "pyav", does_not_raise()),  # no device
        ("auto", False, True, INFO, "clip.mp4", "pyav", does_not_raise()),  # not installed
        ("auto", True, True, replace(INFO, seekable=False), "a.avi", "pyav", does_not_raise()),
        ("auto", True, True, INFO, "http://h/clip.mp4", "pyav", does_not_raise()),
        ("auto", True, True, replace(INFO, rotation=90), "clip.mp4", "pyav", does_not_raise()),
        ("torchcodec-cpu", True, False, INFO, "file:///c.mp4", "torchcodec-cpu", does_not_raise()),
        (
            "torchcodec-cuda",
            False,
            True,
            INFO,
            "clip.mp4",
            None,
            pytest.raises(TorchcodecUnavailableError, match=r"pip install 'sapiens-stream\["),
        ),
        (
            "torchcodec-cpu",
            True,
            False,
            replace(INFO, seekable=False),
            "a.avi",
            None,
            pytest.raises(UnsupportedBackendError, match=r"not a seekable file.*'auto' or 'pyav'"),
        ),
        (
            "torchcodec-cpu",
            True,
            False,
            replace(INFO, mirrored=True),
            "clip.mp4",
            None,
            pytest.raises(UnsupportedBackendError, match="rotated or mirrored"),
        ),
        ("nvdec", True, True, INFO, "c.mp4", None, pytest.raises(UnsupportedBackendError)),
    ],
)
def test_choose_backend_takes_torchcodec_only_where_it_reads_exactly(
    monkeypatch: pytest.MonkeyPatch,
    asked: str,
    loads: bool,
    cuda: bool,
    info: VideoInfo,
    source: str,
    expected: str | None,
    raises: Any,
) -> None:
    why = (
        None
        if loads
        else "torchcodec is not installed; install with: pip install 'sapiens-stream[gpu-decode]'"
    )
    monkeypatch.setattr(media._torchcodec, "torchcodec_error", lambda: why)
    asked_cuda: list[bool] = []

    def has_cuda() -> bool:
        asked_cuda.append(True)
        return cuda

    with raises:
        assert choose_backend(asked, source, info, cuda=has_cuda) == expected
    assert not asked_cuda or loads  # torch is not asked about a device unless torchcodec loads


def test_the_decode_stage_validates_and_resolves_its_backend(tmp_path: Path) -> None:
    with pytest.raises(InvalidDecodeSpecError, match="backend: expected one of"):
        DecodeSpec(backend="nvdec")
    clip = write_clip(tmp_path / "clip.mp4", width=160, height=128, n=2)
    worker = DecodeWorker(DecodeSpec())
    info = worker.probe(clip)
    want = "pyav" if MISSING is not None else ("torchcodec-cuda" if _cuda() else "pyav")
    assert worker.backend(clip, info) == want


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _batches(source: Path | str, **spec: Any) -> tuple[np.ndarray, ...]:
    frames, index, pts, times, corrupt = [], [], [], [], []
    for batch in DecodeWorker(DecodeSpec(batch_size=4, threads=1, **spec)).batches("j", source):
        frames.append(batch.frames.astype(np.int16))
        index.append(batch.source_index)
        pts.append(batch.pts)
        times.append(batch.time_s)
        corrupt.append(batch.corrupt)
    return tuple(np.concatenate(x) for x in (frames, index, pts, times, corrupt))


@needs_torchcodec
@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"stride": 3},
        {"target_fps": 7.0, "start_s": 0.2, "end_s": 1.0},
        {"floor": SizeFloor(side=96)},
    ],
)
def test_torchcodec_cpu_gives_the_frames_pyav_gives(tmp_path: Path, spec: dict[str, Any]) -> None:
    """Equal pixels at the coded size; scaled down (torchcodec's antialiased bilinear filter
    against swscale's area filter) the same picture: the box within a pixel, the rest close."""
    clip = write_clip(tmp_path / "clip.mp4", width=352, height=240, n=12, bframes=2)
    ref = _batches(clip, backend="pyav", **spec)
    got = _batches(clip, backend="torchcodec-cpu", **spec)
    for name, a, b in zip(("index", "pts", "time_s", "corrupt"), ref[1:], got[1:], strict=True):
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert ref[0].shape == got[0].shape
    if "floor" not in spec:
        np.testing.assert_array_equal(got[0], ref[0])
        return
    assert float(np.abs(got[0] - ref[0]).mean()) < 2.0
    for a, b in zip(ref[0], got[0], strict=True):
        assert np.abs(bright_box(b) - bright_box(a)).max() <= 1.0


@needs_torchcodec
def test_torchcodec_decodes_only_the_kept_frames_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", width=352, height=240, n=12, bframes=2)
    asked: list[list[int]] = []
    decode = media._torchcodec.TorchcodecFrames.frames

    def counting(self: Any, indices: list[int]) -> np.ndarray:
        asked.append(list(indices))
        return decode(self, indices)

    monkeypatch.setattr(media._torchcodec.TorchcodecFrames, "frames", counting)
    worker = DecodeWorker(DecodeSpec(batch_size=4, stride=3, threads=1, backend="torchcodec-cpu"))
    resumed = [b.source_index.tolist() for b in worker.batches("j", clip, start_index=4)]
    assert resumed == [[6, 9]]
    assert asked == [[6, 9]]  # frames 0-5 and the ones stride 3 drops are never converted


@needs_torchcodec
def test_a_file_torchcodec_numbers_otherwise_is_left_to_pyav(shared_clip: Path) -> None:
    """The shared AVI gives reordered pts (2, 6, 8, 10, 12, 4, ...): torchcodec shows the
    same pictures in the same order, but numbers their pts in sorted order, so it is refused."""
    info = probe_video(shared_clip, max_side=None, threads=0, open_timeout_s=9, read_timeout_s=9)
    assert not info.seekable
    with pytest.raises(UnsupportedBackendError, match="not a seekable file"):
        choose_backend("torchcodec-cpu", shared_clip, info, cuda=lambda: False)
    forced = media._torchcodec.TorchcodecFrames(shared_clip, info, device="cpu", threads=0)
    pyav = media.VideoReader(
        shared_clip, info, sampler=media.Sampler(stride=1, target_fps=None, start_s=0.0, end_s=0.5)
    )
    ref = [(f.index, f.pts, f.rgb()) for f in pyav]
    rgb = forced.frames([i for i, _, _ in ref])
    assert all(np.array_equal(a[2], b) for a, b in zip(ref, rgb, strict=True))  # same pictures
    assert [p for _, p, _ in ref] != forced.pts[: len(ref)]  # other pts


@needs_torchcodec
def test_a_frame_torchcodec_numbers_otherwise_hands_the_rest_to_pyav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frame 6 is made to carry another pts than its packet's: torchcodec's chunk from frame 4
    is refused, and PyAV gives frames 4 onwards (an exact resume), as in a PyAV-only pass."""
    clip = write_clip(tmp_path / "clip.mp4", width=352, height=240, n=12, bframes=2)
    sorted_pts = media._torchcodec._sorted_pts

    def shifted(path: str, name: str) -> tuple[int, list[int]]:
        index, pts = sorted_pts(path, name)
        return index, [*pts[:6], pts[6] + 1, *pts[7:]]

    monkeypatch.setattr(media._torchcodec, "_sorted_pts", shifted)
    info = probe_video(clip, max_side=None, threads=1, open_timeout_s=9, read_timeout_s=9)
    reader = media.VideoReader(clip, info, threads=1, backend="torchcodec-cpu", batch=4)
    got = [(f.index, f.pts, f.rgb()) for f in reader]
    ref = [(f.index, f.pts, f.rgb()) for f in media.VideoReader(clip, info, threads=1)]
    assert reader.backend_used == "pyav" and "expected" in str(reader.fallback)
    assert [g[:2] for g in got] == [r[:2] for r in ref]
    assert all(np.array_equal(g[2], r[2]) for g, r in zip(got, ref, strict=True))
