"""msgpack values: round trips and clear errors for malformed data (never pickle)."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest

from storage._values import pack, unpack, unpack_map
from storage.errors import InvalidValueError
from storage.jobs import JobRecord


def test_round_trip() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": b"\x00\x01"}}
    assert unpack(pack(value)) == value


@pytest.mark.parametrize("bad", [{"t": dt.datetime(2020, 1, 1)}, {"s": {1, 2}}, object()])
def test_unserialisable_values(bad: object) -> None:
    with pytest.raises(InvalidValueError, match="cannot be stored as msgpack"):
        pack(bad)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb({"a": 1}) + b"\x01", "not valid msgpack"),
        (msgpack.packb({1: "int key"}), "not valid msgpack"),
        (msgpack.packb(msgpack.ExtType(3, b"x")), "extension type 3"),
        (None, "is missing"),
    ],
)
def test_malformed_bytes(data: bytes | None, match: str) -> None:
    with pytest.raises(InvalidValueError, match=match):
        unpack(data, what="thing")


def test_unpack_map_requires_a_map() -> None:
    with pytest.raises(InvalidValueError, match="spec must be a msgpack map, got list"):
        unpack_map(pack([1]), what="spec")


def _hash(**overrides: bytes) -> dict[bytes, bytes]:
    base = {
        b"state": b"queued", b"created_ms": b"1", b"updated_ms": b"2", b"spec": pack({}),
        b"meta": pack({}), b"attempts": b"0", b"token": b"0", b"cancel": b"0",
        b"committed_frames": b"0", b"n:frames": b"7",
    }  # fmt: skip
    return {**base, **{k.encode(): v for k, v in overrides.items()}}


def test_job_record_decoding() -> None:
    rec = JobRecord.from_hash("j1", _hash())
    assert (rec.state, rec.counters, rec.owner, rec.finished) == (
        "queued",
        {"frames": 7},
        None,
        False,
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"state": b"lost"}, "field 'state' is 'lost'"),
        ({"attempts": b"x"}, "field 'attempts' must be an integer, got 'x'"),
        ({"spec": b"\xc1"}, "job 'j1' field 'spec' is not valid msgpack"),
        ({"spec": pack([1])}, "field 'spec' must be a msgpack map"),
        ({"state": b"\xff"}, "not ASCII"),
    ],
)
def test_malformed_job_hash(overrides: dict[str, bytes], match: str) -> None:
    with pytest.raises(InvalidValueError, match=match):
        JobRecord.from_hash("j1", _hash(**overrides))


def test_missing_field() -> None:
    raw = _hash()
    del raw[b"token"]
    with pytest.raises(InvalidValueError, match="field 'token' is missing"):
        JobRecord.from_hash("j1", raw)
