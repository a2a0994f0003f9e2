"""Local sources: a plain path and a ``file://`` URL go through the same checks before FFmpeg
opens anything, so a FIFO, a device or a directory fails at once instead of blocking."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from actors.decode import DecodeSpec, DecodeWorker
from actors.errors import DecodeError, SourceNotFoundError, UnreadableMediaError
from tests.inputs.mjpeg import mjpeg_mkv

BLOCKED_AFTER_S = 5.0


def _probe_error(source: str, *, fifo: Path | None = None) -> DecodeError:
    """The error of probing ``source``; fails the test if probing blocks. A reader blocked on
    ``fifo`` is released by opening its other end, so that no thread is left behind."""
    outcome: dict[str, BaseException] = {}

    def probe() -> None:
        try:
            DecodeWorker(DecodeSpec()).probe(source)
        except BaseException as e:  # handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(BLOCKED_AFTER_S)
    if thread.is_alive():
        if fifo is not None:
            with fifo.open("wb"):
                pass  # end of file for the blocked reader
            thread.join(10)
        pytest.fail(f"probing {source!r} blocked for {BLOCKED_AFTER_S:g} s")
    error = outcome.get("error")
    assert isinstance(error, DecodeError), f"{source!r}: expected a DecodeError, got {error!r}"
    return error


def _special(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        path = tmp_path / "pipe.mp4"
        os.mkfifo(path)
        return path
    if kind == "directory":
        path = tmp_path / "folder.mp4"
        path.mkdir()
        return path
    return Path("/dev/zero")


def _one_line(message: str) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert not re.search(r"0x[0-9a-f]{6,}|\bpid\b", message, re.IGNORECASE), message


@pytest.mark.parametrize(
    ("kind", "described"),
    [("fifo", "a FIFO"), ("char_device", "a character device"), ("directory", "a directory")],
)
def test_special_files_fail_at_once_as_path_and_as_file_url(
    tmp_path: Path, kind: str, described: str
) -> None:
    path = _special(kind, tmp_path)
    fifo = path if kind == "fifo" else None
    by_path = _probe_error(str(path), fifo=fifo)
    by_url = _probe_error(path.as_uri(), fifo=fifo)
    for error, name in ((by_path, str(path)), (by_url, path.as_uri())):
        assert type(error) is SourceNotFoundError, f"{name}: {type(error).__name__}: {error}"
        assert f"not a regular file but {described}" in str(error)
        assert repr(name) in str(error)
        _one_line(str(error))
    assert str(by_url).replace(repr(path.as_uri()), repr(str(path))) == str(by_path)


def test_file_url_names_the_local_file_percent_decoded(tmp_path: Path) -> None:
    path = mjpeg_mkv(tmp_path / "a clip 100%.mkv", [(64, 48)] * 3)
    worker = DecodeWorker(DecodeSpec(batch_size=4))
    expected = next(iter(worker.batches("job", str(path)))).frames
    for url in (path.as_uri(), "file://localhost" + path.as_uri().removeprefix("file://")):
        batch = next(iter(worker.batches("job", url)))
        np.testing.assert_array_equal(batch.frames, expected)
        assert batch.info is not None and batch.info.source == url


def test_file_url_of_another_host_is_refused(tmp_path: Path) -> None:
    error = _probe_error("file://elsewhere" + str(tmp_path / "clip.mkv"))
    assert isinstance(error, SourceNotFoundError)
    assert "a file URL must name a path on this machine" in str(error)


def test_a_local_name_that_looks_like_a_protocol_is_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg would read ``cache:clip.mkv`` as its cache protocol over another file."""
    monkeypatch.chdir(tmp_path)
    mjpeg_mkv(tmp_path / "cache:clip.mkv", [(32, 16)] * 2)
    info = DecodeWorker(DecodeSpec()).probe("cache:clip.mkv")
    assert (info.width, info.height, info.source) == (32, 16, "cache:clip.mkv")


def test_wrapper_protocols_over_local_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    source = "crypto+" + fifo.as_uri()
    error = _probe_error(source, fifo=fifo)
    assert isinstance(error, UnreadableMediaError)
    assert "unsupported protocol 'crypto+file'" in str(error) and repr(source) in str(error)
    _one_line(str(error))
