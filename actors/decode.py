"""Decode stage: a video file, URL or RTSP stream in, batches of upright RGB frames out.

A plain class (no Ray here); ``flows/`` wraps it with ``ray.remote`` and streams its generator.
Probing, frame numbering, sampling, orientation and exact resume are ``media``'s
(:func:`~media.probe_video`, :class:`~media.VideoReader`); this stage validates its settings,
checks the limits and packs the selected frames into :class:`FrameBatch` es.

Resource limits (:class:`DecodeLimits`) are checked when the video's size is known: the frame
size from the stream header before any frame is decoded, every decoded frame before it is
converted, and the dense maps a batch will need downstream once the probe is done. A video
over a limit raises :class:`~actors.errors.ResourceLimitError` (one line naming the option).

Retry safety: ``batches(job_id, source, start_index=k)`` yields exactly the frames with
``source_index >= k`` of a clean run, with equal pixels, indices, pts and times, so a retried or
resumed job rewrites the same frame regions (see ``media``'s reader for the one exception, the
concealed frames of damaged input).

Example:
    >>> worker = DecodeWorker(DecodeSpec(batch_size=8, target_fps=5.0, max_side=640))
    >>> for batch in worker.batches("job-1", "video.mp4"):  # doctest: +SKIP
    ...     batch.frames.shape  # (B, H, W, 3) uint8
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from actors._decode_checks import _bytes, _check_int, _check_keys, _check_number
from actors.errors import InvalidDecodeSpecError, ResourceLimitError
from actors.messages import FrameBatch, VideoInfo
from media import (
    BACKENDS,
    MAX_PIXELS,
    OPEN_TIMEOUT_S,
    READ_TIMEOUT_S,
    Backend,
    DecodedFrame,
    Sampler,
    SizeFloor,
    VideoReader,
    check_frame_pixels,
    choose_backend,
    is_live,
    output_size,
    probe_video,
)

__all__ = ["MAX_PIXELS", "DecodeLimits", "DecodeSpec", "DecodeWorker", "SizeFloor"]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeLimits:
    """Resource limits of one decode, checked before the frames they concern are used.

    Args:
        max_pixels: largest decoded frame, width x height (before any downscale), or None.
        max_map_bytes: most bytes of dense maps that one batch may need downstream, or None.
        map_bytes_per_pixel: bytes of those maps per output pixel and frame (0: no maps).
        map_max_side: longer side of the maps: the frames' size scaled down to at most this
            (None: the frames' size).

    The map bytes of a video are ``H' x W' x map_bytes_per_pixel x batch_size``, where
    ``(H', W')`` is the upright coded size (``VideoInfo.full_size``) scaled down to
    ``map_max_side`` by :func:`media.output_size` (the size ``JobPlan.out_size`` gives the
    maps, whatever size the frames are decoded at).
    """

    max_pixels: int | None = MAX_PIXELS
    max_map_bytes: int | None = None
    map_bytes_per_pixel: int = 0
    map_max_side: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_map_bytes", "map_max_side"):
            if getattr(self, name) is not None:
                _check_int(f"limits.{name}", getattr(self, name), low=1)
        _check_int("limits.map_bytes_per_pixel", self.map_bytes_per_pixel, low=0)

    def check(self, info: VideoInfo, batch_size: int) -> None:
        """Raise when ``info``'s frames, or the maps of a batch of them, are over a limit.

        Raises:
            ResourceLimitError: one line naming the limit, what the video needs and the
                option that raises the limit.
        """
        check_frame_pixels(info.source_width, info.source_height, self.max_pixels, info.source)
        if self.max_map_bytes is None or not self.map_bytes_per_pixel:
            return
        height, width = output_size(*info.full_size, max_side=self.map_max_side)
        need = width * height * self.map_bytes_per_pixel * batch_size
        if need > self.max_map_bytes:
            msg = (
                f"video {info.source!r}: a batch of {batch_size} frames needs {_bytes(need)} "
                f"of dense maps at {width}x{height} ({self.map_bytes_per_pixel} bytes per "
                f"pixel), over the limit of {_bytes(self.max_map_bytes)}; set max_side, lower "
                "batch_size or raise limits.max_map_bytes"
            )
            raise ResourceLimitError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeSpec:
    """How to decode and sample one video.

    Args:
        batch_size: most frames per :class:`FrameBatch`.
        stride: keep frames whose decode index is a multiple of ``stride``.
        target_fps: keep about this many frames per second instead (exclusive with stride).
        start_s: first second to keep (inclusive), on the ``time_s`` scale.
        end_s: second at which to stop (exclusive), or None for the whole video.
        max_side: downscale at decode so the longer side is at most this many pixels.
        floor: downscale at decode as far as this floor allows instead (the smallest size a
            job can use without loss; ``flows.plan.decode_floor``); exclusive with max_side.
        threads: decoder threads; 0 lets FFmpeg choose.
        open_timeout_s: seconds a network source may take to open.
        read_timeout_s: seconds a network source may stay silent while reading.
        seek: allow a resume to seek to a keyframe (only when provably exact).
        limits: resource limits, checked before the frames they concern are used.
        backend: ``auto`` (torchcodec on NVDEC where it loads, this process sees a CUDA device
            and the source suits it, else PyAV), ``pyav``, ``torchcodec-cpu`` or
            ``torchcodec-cuda`` (:func:`media.choose_backend`).
        reconnects: a live source (RTSP...) that drops is reopened up to this many times in
            a row, waiting ``reconnect_backoff_s`` doubled each time, before the decode fails.
        reconnect_backoff_s: the wait before the first reconnect attempt.
        live_batch_s: a live source's batch is emitted once its first frame is this old,
            full or not, so results commit on a time bound whatever the frame rate.
    """

    batch_size: int = 8
    stride: int = 1
    target_fps: float | None = None
    start_s: float = 0.0
    end_s: float | None = None
    max_side: int | None = None
    floor: SizeFloor | None = None
    threads: int = 0
    open_timeout_s: float = OPEN_TIMEOUT_S
    read_timeout_s: float = READ_TIMEOUT_S
    seek: bool = True
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    backend: str = "auto"
    reconnects: int = 5
    reconnect_backoff_s: float = 1.0
    live_batch_s: float = 1.0

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("stride", 1), ("threads", 0), ("reconnects", 0)):
            _check_int(name, getattr(self, name), low=low)
        if self.max_side is not None:
            _check_int("max_side", self.max_side, low=16)
        if self.floor is not None and (self.max_side or not isinstance(self.floor, SizeFloor)):
            msg = "DecodeSpec.floor: expected a SizeFloor and no max_side, got "
            raise InvalidDecodeSpecError(f"{msg}floor={self.floor!r}, max_side={self.max_side}")
        for name in ("open_timeout_s", "read_timeout_s", "reconnect_backoff_s", "live_batch_s"):
            _check_number(name, getattr(self, name), positive=True)
        _check_number("start_s", self.start_s, positive=False)
        if self.target_fps is not None:
            _check_number("target_fps", self.target_fps, positive=True)
            if self.stride != 1:
                msg = f"give stride or target_fps, not both; got stride={self.stride}, "
                msg += f"target_fps={self.target_fps}"
                raise InvalidDecodeSpecError(msg)
        if self.end_s is not None:
            _check_number("end_s", self.end_s, positive=True)
            if self.end_s <= self.start_s:
                msg = f"end_s must be > start_s, got start_s={self.start_s}, end_s={self.end_s}"
                raise InvalidDecodeSpecError(msg)
        if not isinstance(self.seek, bool):
            msg = f"DecodeSpec.seek: expected a bool, got {self.seek!r}"
            raise InvalidDecodeSpecError(msg)
        if self.backend not in ("auto", *BACKENDS):
            msg = f"DecodeSpec.backend: expected one of {['auto', *BACKENDS]}, got {self.backend!r}"
            raise InvalidDecodeSpecError(msg)
        if not isinstance(self.limits, DecodeLimits):
            msg = f"DecodeSpec.limits: expected a DecodeLimits, got {type(self.limits).__name__}"
            raise InvalidDecodeSpecError(msg)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DecodeSpec:
        """Build from plain values, rejecting unknown keys."""
        _check_keys(cls, raw)
        data = dict(raw)
        if isinstance(data.get("limits"), Mapping):
            _check_keys(DecodeLimits, data["limits"])
            data["limits"] = DecodeLimits(**data["limits"])
        if isinstance(data.get("floor"), Mapping):
            _check_keys(SizeFloor, data["floor"])
            data["floor"] = SizeFloor(**data["floor"])  # ValueError naming the field
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain values; ``DecodeSpec.from_dict(spec.to_dict()) == spec``."""
        return asdict(self)


class DecodeWorker:
    """Decodes videos into :class:`FrameBatch` streams; holds no open file between calls.

    Args:
        spec: decode and sampling settings, fixed for the worker's life.
    """

    def __init__(self, spec: DecodeSpec) -> None:
        if not isinstance(spec, DecodeSpec):
            msg = f"expected a DecodeSpec, got {type(spec).__name__}"
            raise InvalidDecodeSpecError(msg)
        self.spec = spec

    def probe(self, source: Source) -> VideoInfo:
        """Open ``source``, decode its first frames and return its facts.

        Raises:
            ResourceLimitError: the video is over ``spec.limits`` (checked from the stream's
                header before any frame is decoded, then on the probed frames and the maps).
            DecodeError: a subclass naming the source and the cause (not found, unreachable,
                not media, no video stream, no decodable frame).
        """
        s = self.spec
        info = probe_video(
            source,
            max_side=s.max_side,
            floor=s.floor,
            threads=s.threads,
            open_timeout_s=s.open_timeout_s,
            read_timeout_s=s.read_timeout_s,
            max_pixels=s.limits.max_pixels,
        )
        s.limits.check(info, s.batch_size)
        return info

    def batches(self, job_id: str, source: Source, *, start_index: int = 0) -> Iterator[FrameBatch]:
        """Stream the selected frames of ``source`` as batches of at most ``spec.batch_size``.

        The source is probed before this returns, so unreadable input raises here; decoding
        runs lazily as the iterator is consumed and never holds more than one batch.

        Args:
            job_id: carried into every batch.
            source: local path (any container FFmpeg reads), http(s) URL or RTSP/RTMP URL.
            start_index: first decode index to emit; earlier frames are decoded (or skipped by
                an exact keyframe seek) but not emitted. 0 for a fresh job.

        Returns:
            An iterator of batches; the last has ``is_last=True``, the first carries ``info``.

        Raises:
            InvalidDecodeSpecError: empty ``job_id`` or negative ``start_index``.
            UnknownFrameRateError: ``target_fps``/``start_s``/``end_s`` on a video without
                frame times.
            DecodeError: unreadable source (see :meth:`probe`); network failures while
                decoding raise :class:`~actors.errors.SourceUnreachableError` from the iterator.
        """
        return self.open(job_id, source, start_index=start_index)[1]

    def open(
        self, job_id: str, source: Source, *, start_index: int = 0
    ) -> tuple[VideoInfo, Iterator[FrameBatch]]:
        """:meth:`batches`, with the probed facts of the source beside the iterator."""
        if not isinstance(job_id, str) or not job_id:
            msg = f"job_id: expected a non-empty str, got {job_id!r}"
            raise InvalidDecodeSpecError(msg)
        if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
            msg = f"start_index: expected an int >= 0, got {start_index!r}"
            raise InvalidDecodeSpecError(msg)
        info = self.probe(source)
        s = self.spec
        reader = VideoReader(
            source,
            info,
            sampler=Sampler(
                stride=s.stride, target_fps=s.target_fps, start_s=s.start_s, end_s=s.end_s
            ),
            start_index=start_index,
            seek=s.seek,
            threads=s.threads,
            open_timeout_s=s.open_timeout_s,
            read_timeout_s=s.read_timeout_s,
            max_pixels=s.limits.max_pixels,
            corrupt_slots=True,
            backend=self.backend(source, info),
            batch=s.batch_size,
            live=(s.reconnects, s.reconnect_backoff_s),
        )
        wait_s = s.live_batch_s if is_live(os.fspath(source)) else math.inf
        return info, _Batcher(job_id, info, (s.batch_size, wait_s), reader).run()

    def backend(self, source: Source, info: VideoInfo) -> Backend:
        """The decoder ``spec.backend`` resolves to for ``source`` (:func:`media.choose_backend`;
        ``auto`` asks torch whether this process sees a CUDA device)."""
        return choose_backend(self.spec.backend, source, info, cuda=_cuda_available)


def _cuda_available() -> bool:
    import torch  # only asked once torchcodec, which brings torch, is known to load

    return bool(torch.cuda.is_available())


class _Batcher:
    """Packs the frames a reader selects into FrameBatches, one buffer at a time."""

    def __init__(
        self, job_id: str, info: VideoInfo, size: tuple[int, float], reader: VideoReader
    ) -> None:
        self._job_id, self._info, self._reader = job_id, info, reader
        self._size, self._wait_s = size  # frames per batch; how long a batch may fill
        self._since = 0.0  # when the buffer's first frame was added
        self._buffer: np.ndarray | None = None
        self._index: list[int] = []
        self._pts: list[int] = []
        self._time: list[float] = []
        self._corrupt: list[bool] = []
        self._batch_index = 0

    def run(self) -> Iterator[FrameBatch]:
        """Yield batches; a full batch waits for the next kept frame so ``is_last`` is exact.
        A live source's batch also goes out, full or not, once its first frame waited
        ``wait_s`` (so its last batch may be empty)."""
        emitted = 0
        for frame in self._reader:
            late = self._index and time.monotonic() - self._since >= self._wait_s
            if len(self._index) == self._size or late:
                yield self._flush(is_last=False)
            self._add(frame)
            emitted += 1
        yield self._flush(is_last=True)
        logger.info(
            "%s: job %s: emitted %d frames up to decode index %d, %d corrupt",
            self._info.source,
            self._job_id,
            emitted,
            self._reader.last_index,
            self._reader.n_corrupt,
        )

    def _add(self, frame: DecodedFrame) -> None:
        if not self._index:
            self._since = time.monotonic()
        if self._buffer is None:
            shape = (self._size, self._info.height, self._info.width, 3)
            self._buffer = np.empty(shape, dtype=np.uint8)
        frame.rgb(out=self._buffer[len(self._index)])
        self._index.append(frame.index)
        self._pts.append(-1 if frame.pts is None else frame.pts)
        self._time.append(frame.time_s)
        self._corrupt.append(frame.corrupt)

    def _flush(self, *, is_last: bool) -> FrameBatch:
        n = len(self._index)
        if self._buffer is None:
            frames = np.empty((0, self._info.height, self._info.width, 3), dtype=np.uint8)
        else:
            frames = self._buffer[:n]  # a leading slice stays C-contiguous; no copy
        batch = FrameBatch(
            job_id=self._job_id,
            batch_index=self._batch_index,
            frames=frames,
            source_index=np.asarray(self._index, dtype=np.int64),
            pts=np.asarray(self._pts, dtype=np.int64),
            time_s=np.asarray(self._time, dtype=np.float64),
            corrupt=np.asarray(self._corrupt, dtype=bool),
            is_last=is_last,
            n_corrupt=self._reader.take_corrupt(),
            info=self._info if self._batch_index == 0 else None,
        )
        logger.debug(
            "%s: batch %d: %d frames from index %s",
            self._job_id,
            self._batch_index,
            n,
            self._index[0] if n else None,
        )
        self._buffer, self._index, self._pts, self._time = None, [], [], []
        self._corrupt = []
        self._batch_index += 1
        return batch
