"""``VideoInfo``: the facts of one video source, as the probe reads them.

It crosses process boundaries (on the first ``FrameBatch`` of a decode and in store metadata),
so it is a frozen dataclass of plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

__all__ = ["TimeSource", "VideoInfo"]

#: Where ``time_s`` comes from: the frame's pts, or its decode index divided by the frame rate.
TimeSource = Literal["pts", "rate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoInfo:
    """Facts about one video source, as read by :func:`media.probe_video`.

    Args:
        source: the path or URL (passwords in URLs replaced by ``***``).
        container: FFmpeg demuxer name, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"`` or ``"avi"``.
        codec: video codec name, e.g. ``"h264"``.
        source_width: coded frame width in pixels, before rotation and downscale.
        source_height: coded frame height in pixels, before rotation and downscale.
        width: width of the emitted frames (after downscale and rotation).
        height: height of the emitted frames (after downscale and rotation).
        fps: FFmpeg's guessed frame rate (``guessed_rate``, else ``average_rate``), or None.
        time_base: the stream's pts unit in seconds, or None.
        duration_s: duration reported by the container, or None; not trusted for counting.
        frame_count_hint: frame count reported by the container, or None; not trusted (an AVI
            may report twice the frames it decodes).
        rotation: counter-clockwise rotation in degrees (0, 90, 180, 270) applied to frames.
        mirrored: whether frames are also flipped left-right after the rotation.
        time_source: ``"pts"`` if ``time_s`` comes from pts, ``"rate"`` if from index / fps.
        start_pts: pts of the first decoded frame (time 0 in ``"pts"`` mode), or None.
        seekable: whether a resume (``start_index > 0``) may seek to a keyframe instead of
            decoding from the start; results are identical either way.
    """

    source: str
    container: str
    codec: str
    source_width: int
    source_height: int
    width: int
    height: int
    fps: float | None
    time_base: Fraction | None
    duration_s: float | None
    frame_count_hint: int | None
    rotation: int
    mirrored: bool
    time_source: TimeSource
    start_pts: int | None
    seekable: bool

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            msg = f"VideoInfo: expected width, height >= 1, got {self.width}x{self.height}"
            raise ValueError(msg)
        if self.rotation not in (0, 90, 180, 270):
            msg = f"VideoInfo.rotation: expected one of 0, 90, 180, 270, got {self.rotation}"
            raise ValueError(msg)

    @property
    def full_size(self) -> tuple[int, int]:
        """(height, width) of the upright frames before any downscale."""
        if self.rotation in (90, 270):
            return self.source_width, self.source_height
        return self.source_height, self.source_width

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/msgpack-ready values (``time_base`` as ``"num/den"``)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["time_base"] = None if self.time_base is None else str(self.time_base)
        return out
