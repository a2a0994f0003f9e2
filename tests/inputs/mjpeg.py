"""Flat grey MJPEG videos of any frame size, written without ever holding a frame in memory:
hand-written JPEG packets muxed with PyAV."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av

__all__ = ["flat_jpeg", "mjpeg_mkv"]


def flat_jpeg(width: int, height: int) -> bytes:
    """A valid baseline JPEG of ``width`` x ``height`` mid-grey (level 128) pixels, written by
    hand: one grey component and Huffman tables whose only codes are one bit long (DC
    difference 0, end of block), so each 8x8 block costs two bits and a 12000 x 12000 frame
    about 550 KB of zero bytes."""

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body

    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for symbol 0
    blocks = -(-width // 8) * -(-height // 8)
    return b"".join([
        b"\xff\xd8",  # SOI
        segment(0xDB, b"\x00" + bytes([1] * 64)),  # DQT: table 0, all ones
        segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0])),
        segment(0xC4, b"\x00" + one_code + b"\x10" + one_code),  # DHT: DC 0 and AC 0
        segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0])),  # SOS: component 1, tables 0/0
        bytes(-(-blocks * 2 // 8)),
        b"\xff\xd9",  # EOI
    ])  # fmt: skip


def mjpeg_mkv(path: Path, sizes: list[tuple[int, int]]) -> Path:
    """An MKV of flat grey MJPEG frames, one of each (width, height) in ``sizes``, at 25 fps.
    The frames are muxed as packets, so no frame of that size is ever held in memory."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height = sizes[0]
        stream.pix_fmt = "yuvj420p"
        out.start_encoding()
        for i, (width, height) in enumerate(sizes):
            packet = av.Packet(flat_jpeg(width, height))
            packet.stream, packet.time_base = stream, Fraction(1, 25)
            packet.pts = packet.dts = i
            packet.is_keyframe = True
            out.mux(packet)
    return path
