"""msgpack encoding of every structured value kept in Redis (never pickle).

Example:
    >>> unpack(pack({"video": "a.mp4", "stride": 2}))
    {'video': 'a.mp4', 'stride': 2}
    >>> pack({"when": object()})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    storage.errors.InvalidValueError: value cannot be stored as msgpack: can not serialize ...
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

from storage.errors import InvalidValueError

__all__ = ["pack", "unpack", "unpack_map"]

MAX_VALUE_BYTES = 16 * 2**20


def _no_ext(code: int, data: bytes) -> NoReturn:
    msg = f"msgpack extension type {code} is not accepted"
    raise InvalidValueError(msg)


def pack(value: Any) -> bytes:
    """Encode ``value`` (None, bool, int, float, str, bytes, list, tuple, dict) as msgpack.

    Raises:
        InvalidValueError: If the value holds other types or is larger than 16 MiB.
    """
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as e:
        msg = f"value cannot be stored as msgpack: {e}"
        raise InvalidValueError(msg) from e
    if len(data) > MAX_VALUE_BYTES:
        msg = f"value is {len(data)} bytes as msgpack; the limit is {MAX_VALUE_BYTES}"
        raise InvalidValueError(msg)
    return data


def unpack(data: bytes | None, *, what: str = "value") -> Any:
    """Decode msgpack ``data``; raise InvalidValueError naming ``what`` if it is malformed."""
    if data is None:
        msg = f"{what} is missing"
        raise InvalidValueError(msg)
    if len(data) > MAX_VALUE_BYTES:
        msg = f"{what} is {len(data)} bytes; the limit is {MAX_VALUE_BYTES}"
        raise InvalidValueError(msg)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
        )
    except InvalidValueError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        msg = f"{what} is not valid msgpack ({len(data)} bytes): {e}"
        raise InvalidValueError(msg) from e


def unpack_map(data: bytes | None, *, what: str = "value") -> dict[str, Any]:
    """Decode msgpack ``data`` that must be a map with string keys."""
    value = unpack(data, what=what)
    if not isinstance(value, dict):
        msg = f"{what} must be a msgpack map, got {type(value).__name__}"
        raise InvalidValueError(msg)
    return value
