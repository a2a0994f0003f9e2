"""Validation helpers of the decode stage's settings (:mod:`actors.decode`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from actors.errors import InvalidDecodeSpecError

__all__ = ["_bytes", "_check_int", "_check_keys", "_check_number"]


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _check_keys(cls: type, raw: Mapping[str, Any]) -> None:
    valid = {f.name for f in fields(cls)}
    if unknown := raw.keys() - valid:
        msg = f"unknown {cls.__name__} key(s) {sorted(unknown)}; valid keys: {sorted(valid)}"
        raise InvalidDecodeSpecError(msg)


def _check_int(name: str, value: object, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        msg = f"DecodeSpec.{name}: expected an int >= {low}, got {value!r}"
        raise InvalidDecodeSpecError(msg)


def _check_number(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):  # type: ignore[operator]
        bound = "> 0" if positive else ">= 0"
        msg = f"DecodeSpec.{name}: expected a finite number {bound}, got {value!r}"
        raise InvalidDecodeSpecError(msg)
