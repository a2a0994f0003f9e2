"""Resume by keyframe seek, used only when it provably numbers frames like a clean run.

A clean run numbers frames by a decode counter from 0. After a seek that counter is unknown, so
the plan comes from a demux-only scan of the packets before the target (reading, no decoding):

1. Count non-empty, not-discarded packets; with one frame per packet (checked by the probe for
   the codec and the stream's first frames) the k-th counted packet yields frame k.
2. Candidate keyframes are those whose pts is above every earlier pts and equal to the
   smallest pts at or after them (a closed GOP: nothing decoded later is shown earlier).
   Frames from such a keyframe on are then the sorted pts of the packets from it on.
3. After the seek, packets are skipped until the chosen keyframe packet itself (by position,
   pts, dts and size); every frame up to the target must carry the expected pts and decode
   cleanly. Any mismatch raises :class:`SeekMismatch` before a frame at or past the target is
   used, and the caller decodes from the start instead.

What the scan cannot see: a packet before the keyframe, past the probe's window, that decodes
to zero or two frames (a packet that fails to decode keeps its slot, see ``FrameReader``, so
it does not shift the numbering). A reader with ``seek=False`` always decodes from the start.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import av

from media._sampling import FrameClock
from media._stream import FrameReader, iter_packets
from media.errors import SeekMismatch

__all__ = ["SeekPlan", "plan_seek", "seek_packets", "verified"]

logger = logging.getLogger(__name__)

_MARGIN = 16  # packets scanned past the target: more than any B-frame reordering depth
_MAX_SKIPPED = 10_000  # packets read after a seek while looking for the keyframe packet


@dataclass(frozen=True, slots=True)
class _Key:
    count: int  # decode index of the frame this packet starts (counted packets before it)
    pts: int
    dts: int | None
    pos: int | None
    size: int


@dataclass(frozen=True, slots=True)
class SeekPlan:
    """Where to seek and what the frames after the seek must look like.

    Args:
        key: the keyframe packet to decode from.
        expected_pts: pts of the frames at decode index ``key.count``, ``key.count + 1``, ...
        verify_until: last decode index checked against ``expected_pts`` before it is used.
    """

    key: _Key
    expected_pts: tuple[int, ...]
    verify_until: int


def _scan(
    packets: Iterator[av.Packet], *, start_index: int, start_s: float, clock: FrameClock
) -> tuple[list[int], list[_Key]] | None:
    """pts of counted packets and keyframe candidates, up to the target plus a margin."""
    pts: list[int] = []
    keys: list[_Key] = []
    reached: int | None = None
    for packet in packets:
        if not packet.size or packet.is_discard:
            continue
        if packet.pts is None or packet.is_corrupt:
            return None
        count = len(pts)
        if packet.is_keyframe:
            keys.append(_Key(count, packet.pts, packet.dts, packet.pos, packet.size))
        pts.append(packet.pts)
        if reached is None and count >= start_index and clock.time_of(count, packet.pts) >= start_s:
            reached = count
        if reached is not None and count >= reached + _MARGIN:
            return pts, keys
    return None  # the end came first: a plain decode from the start is as cheap


def plan_seek(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    *,
    start_index: int,
    start_s: float,
    clock: FrameClock,
    name: str,
) -> SeekPlan | None:
    """Scan packets (no decoding) and pick a safe keyframe before the first frame to emit.

    Returns None when no keyframe qualifies; the caller then decodes from the start. The
    container is left wherever the scan stopped: seek it before decoding.
    """
    packets = iter_packets(container, stream, name)
    scanned = _scan(packets, start_index=start_index, start_s=start_s, clock=clock)
    if scanned is None:
        return None
    pts, keys = scanned
    skip_to = max(start_index, sum(clock.time_of(0, p) < start_s for p in pts))
    prefix_max = list(itertools.accumulate(pts, max))
    suffix_min = list(itertools.accumulate(reversed(pts), min))[::-1]
    good = [
        k
        for k in keys
        if 1 <= k.count < skip_to
        and prefix_max[k.count - 1] < k.pts
        and suffix_min[k.count] == k.pts
    ]
    if not good or skip_to >= len(pts):
        return None
    key = good[-1]
    logger.debug("%s: seek plan: keyframe at index %d for target %d", name, key.count, skip_to)
    return SeekPlan(key=key, expected_pts=tuple(sorted(pts[key.count :])), verify_until=skip_to)


def _same(packet: av.Packet, key: _Key) -> bool:
    if packet.size != key.size or packet.pts != key.pts:
        return False
    if packet.pos is not None and key.pos is not None and packet.pos >= 0 and key.pos >= 0:
        return packet.pos == key.pos
    return packet.dts == key.dts


def seek_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    plan: SeekPlan,
    name: str,
) -> Iterator[av.Packet]:
    """Seek to ``plan.key`` and return the packets from that keyframe packet on.

    Raises:
        SeekMismatch: the seek failed or did not reach the keyframe packet.
    """
    key = plan.key
    try:
        target = key.dts if key.dts is not None else key.pts
        container.seek(target, backward=True, any_frame=False, stream=stream)
    except av.error.FFmpegError as e:
        msg = f"seek to pts {key.pts} failed: {e}"
        raise SeekMismatch(msg) from e
    packets = iter_packets(container, stream, name)
    for skipped, packet in enumerate(packets):
        if _same(packet, key):
            return itertools.chain([packet], packets)
        beyond = packet.pos is not None and key.pos is not None and packet.pos > key.pos >= 0
        if beyond or skipped >= _MAX_SKIPPED:
            break
    msg = f"the seek did not reach the keyframe packet at pts {key.pts}"
    raise SeekMismatch(msg)


def verified(reader: FrameReader, plan: SeekPlan) -> Iterator[tuple[int, av.VideoFrame]]:
    """``reader``'s frames, checking each one up to ``plan.verify_until`` before yielding it.

    Raises:
        SeekMismatch: a frame up to ``verify_until`` is missing, corrupt or has another pts.
    """
    first = plan.key.count
    last = first - 1
    for index, frame in reader:
        if index <= plan.verify_until:
            expected = plan.expected_pts[index - first]
            if reader.n_corrupt or frame.pts != expected:
                msg = (
                    f"frame {index}: pts {frame.pts}, expected {expected}; "
                    f"{reader.n_corrupt} corrupt since the seek"
                )
                raise SeekMismatch(msg)
        last = index
        yield index, frame
    if last < plan.verify_until:
        msg = f"decoding ended at index {last}, before the resume point {plan.verify_until}"
        raise SeekMismatch(msg)
