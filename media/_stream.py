"""The video stream of an open container: picking it, reading its packets, and decoding them
into frames numbered by a decode counter, with the per-frame pixel limit checked on each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import av
import av.error
import av.stream

from media._source import NETWORK_ERRORS, network_error
from media.errors import NoVideoStreamError, ResourceLimitError, UnreadableMediaError

__all__ = ["MAX_PIXELS", "FrameReader", "check_frame_pixels", "iter_packets", "video_stream"]

logger = logging.getLogger(__name__)

#: Default largest decoded frame: 8K UHD, 7680 x 4320 pixels.
MAX_PIXELS = 7680 * 4320
_ATTACHED_PIC = av.stream.Disposition.attached_pic  # cover art stored as a one-frame "video"
_MAX_READ_ERRORS = 16  # consecutive demux errors before a source is treated as ended


def video_stream(
    container: av.container.InputContainer, name: str, *, threads: int
) -> av.video.stream.VideoStream:
    """The first decodable video stream that is not a cover picture, set up for threaded
    decoding.

    Args:
        container: an open input container.
        name: source name for messages.
        threads: decoder threads (0: FFmpeg decides).

    Raises:
        NoVideoStreamError: the container has no video stream (cover pictures do not count).
        UnreadableMediaError: its video streams are in codecs FFmpeg cannot decode.
    """
    videos = [s for s in container.streams.video if not s.disposition & _ATTACHED_PIC]
    if not videos:
        kinds = sorted(_kind(s) for s in container.streams) or ["none"]
        msg = f"{name!r} has no video stream (streams: {', '.join(kinds)}); expected a video"
        if not {s.type for s in container.streams} - {"data", "attachment"}:
            msg += " (if it is one, the file may be truncated or damaged)"
        raise NoVideoStreamError(msg)
    decodable = [s for s in videos if s.codec_context is not None]
    if not decodable:  # PyAV gives no codec context when FFmpeg has no decoder for the codec
        msg = (
            f"{name!r}: its video stream is in an unknown codec (no decoder in this FFmpeg "
            "build); expected a common video codec (H.264, HEVC, VP9, AV1, MPEG-4, MJPEG, ...)"
        )
        raise UnreadableMediaError(msg)
    stream = decodable[0]
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = threads
    return stream


def _kind(stream: av.stream.Stream) -> str:
    if stream.type == "video" and stream.disposition & _ATTACHED_PIC:
        return "cover picture"
    return str(stream.type)


def check_frame_pixels(
    width: int, height: int, max_pixels: int | None, name: str, index: int | None = None
) -> None:
    """Refuse a frame of ``width`` x ``height`` above ``max_pixels`` (None: no limit).

    Raises:
        ResourceLimitError: one line naming the limit, the frame size and the option.
    """
    if max_pixels is None or width * height <= max_pixels:
        return
    which = "its frames are" if index is None else f"frame {index} is"
    msg = (
        f"video {name!r}: {which} {width}x{height} ({width * height:,} pixels), over the "
        f"limit of {max_pixels:,} pixels per frame; raise limits.max_pixels to decode it"
    )
    raise ResourceLimitError(msg)


class FrameReader:
    """Decoded frames of one video stream in decode order, numbered by a decode counter.

    The counter counts decoder output slots: every frame out of the decoder, plus one for each
    packet that fails to decode (the frame it stood for). So a corrupt packet does not shift the
    numbering, and ``index / fps`` times, of the frames after it. Frames flagged corrupt and
    failed packets are skipped and counted in ``n_corrupt``. Read errors are
    retried; after ``_MAX_READ_ERRORS`` in a row the source is treated as ended, like a
    truncated file. Network failures raise :class:`SourceUnreachableError`.

    A frame above ``max_pixels`` raises :class:`ResourceLimitError` before it is yielded (and
    so before any conversion to RGB).

    Every such slot is also recorded, in order, in ``corrupt_slots`` as ``(index, pts)`` (the
    failed packet's or corrupt frame's pts, None where unknown), for readers that report them.

    At the end of the stream, packets that never got a slot are counted in ``n_corrupt`` too:
    PyAV stops draining a frame-threaded decoder at the first decode error (and drops an error
    that follows a frame), so on damaged input the frames still inside the decoder would
    otherwise vanish uncounted.

    Args:
        packets: the stream's packets (from :func:`iter_packets`).
        first_index: decode index of the first frame these packets produce.
        name: source name for messages.
        max_pixels: largest frame (width x height) let through, or None for no limit.
    """

    def __init__(
        self,
        packets: Iterator[av.Packet],
        *,
        first_index: int,
        name: str,
        max_pixels: int | None = None,
    ) -> None:
        self._packets = packets
        self._name = name
        self._max_pixels = max_pixels
        self._first_index = first_index
        self.next_index = first_index
        self.n_corrupt = 0
        self.corrupt_slots: list[tuple[int, int | None]] = []

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame]]:
        fed = 0  # packets that stand for a frame (non-empty, not to be discarded)
        for packet in self._packets:
            fed += bool(packet.size) and not packet.is_discard
            try:
                frames = packet.decode()
            except NETWORK_ERRORS as e:
                raise network_error(e, self._name, self.next_index) from e
            except av.error.FFmpegError as e:
                self.n_corrupt += 1
                self.corrupt_slots.append((self.next_index, packet.pts))
                self.next_index += 1  # the frame this packet stood for keeps its slot
                logger.debug("%s: packet at pts %s failed to decode: %s", self._name, packet.pts, e)
                continue
            for frame in frames:
                index, self.next_index = self.next_index, self.next_index + 1
                if frame.is_corrupt:
                    self.n_corrupt += 1
                    self.corrupt_slots.append((index, frame.pts))
                    continue
                check_frame_pixels(frame.width, frame.height, self._max_pixels, self._name, index)
                yield index, frame
        lost = fed - (self.next_index - self._first_index)
        if lost > 0:
            self.n_corrupt += lost
            self.corrupt_slots += [(self.next_index + i, None) for i in range(lost)]
            self.next_index += lost
            logger.warning(
                "%s: %d frame(s) never came out of the decoder (damaged input)", self._name, lost
            )


def iter_packets(
    container: av.container.InputContainer, stream: Any, name: str
) -> Iterator[av.Packet]:
    """Packets of ``stream`` until the end, retrying after read errors (see FrameReader)."""
    errors = 0
    while True:
        try:
            for packet in container.demux(stream):
                errors = 0
                yield packet
            return
        except NETWORK_ERRORS as e:
            raise network_error(e, name) from e
        except av.error.FFmpegError as e:
            errors += 1
            logger.debug("%s: read error %d: %s", name, errors, e)
            if errors >= _MAX_READ_ERRORS:
                logger.warning("%s: %d read errors in a row, treating as end", name, errors)
                return
