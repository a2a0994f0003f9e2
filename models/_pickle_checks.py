"""What the checkpoint unpickler lets a file allocate and rebuild, checked before it happens.

:class:`AllocationBudget` bounds every allocation a pickle can ask for by the size of the file;
the ``check_*`` functions accept exactly the states numpy writes for plain arrays, scalars and
dtypes (numpy's own checks run after allocating, or not at all: an object array filled from a
short list crashes the interpreter).
"""

from __future__ import annotations

import io
import math
from typing import IO, Any

import numpy as np

from models.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "AllocationBudget",
    "budget_of",
    "check_array_state",
    "check_dtype_state",
    "check_scalar",
    "refuse",
]

#: Allocation allowance of a pickle whose size is unknown (bytes).
DEFAULT_BUDGET = 64 << 20


class AllocationBudget:
    """Bytes that unpickling one file may still allocate.

    Everything a well-formed checkpoint allocates while unpickling (array data, byte strings,
    storages of the legacy format, the arguments handed to a constructor) is a copy of bytes in
    the file, so the allowance is four times the file size plus 1 MiB. Anything larger is refused
    before it is allocated, including a small pickle that passes the same memoised list to
    ``set()`` thousands of times.

    Args:
        limit: bytes allowed in total.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    @classmethod
    def for_file_size(cls, size: int) -> AllocationBudget:
        return cls(4 * size + (1 << 20))

    def charge(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes``; raise :class:`CheckpointError` when they do not fit."""
        if nbytes < 0 or nbytes > self.left:
            msg = (
                f"checkpoint asks to allocate {nbytes} bytes for {what}, more than the "
                f"{self.left} of {self.limit} bytes a file of this size can need; refusing it "
                "(nothing was allocated)"
            )
            raise CheckpointError(msg)
        self.left -= nbytes


def budget_of(file: IO[bytes]) -> AllocationBudget:
    """The budget of the rest of ``file`` if it can seek, else :data:`DEFAULT_BUDGET`."""
    try:
        here = file.tell()
        size = file.seek(0, io.SEEK_END) - here
        file.seek(here)
    except (AttributeError, OSError, ValueError):
        return AllocationBudget(DEFAULT_BUDGET)
    return AllocationBudget.for_file_size(size)


def refuse(what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(f"checkpoint {what}; refusing to load it")


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)


def check_dtype_state(state: Any) -> None:
    """Accept the state numpy pickles for plain (non-structured, non-subarray) dtypes."""
    ok = isinstance(state, tuple) and (
        (len(state) == 8 and state[0] == 3) or (len(state) == 9 and state[0] == 4)
    )
    if ok:
        order, sub, names, fields, *ints = state[1:8]
        ok = order in ("<", ">", "|", "=") and sub is None and names is None and fields is None
        ok = ok and all(type(i) is int for i in ints)
    if ok and len(state) == 9:  # datetime units: (None, (unit, num, den, events))
        extra = state[8]
        ok = isinstance(extra, tuple) and len(extra) == 2 and extra[0] is None
        ok = ok and isinstance(extra[1], tuple) and isinstance(extra[1][0], bytes)
    if not ok:
        raise refuse(f"holds a numpy dtype state this loader does not accept: {state!r:.200}")


def check_array_state(state: Any, budget: AllocationBudget) -> None:
    """Accept ``(1, shape, dtype, is_fortran, data)`` whose data fills the shape exactly."""
    ok = isinstance(state, tuple) and len(state) == 5 and state[0] == 1
    ok = ok and _is_shape(state[1]) and isinstance(state[2], np.dtype)
    ok = ok and type(state[3]) is bool
    if not ok:
        raise refuse(f"holds a numpy array state numpy never writes: {state!r:.200}")
    _, shape, dtype, _, raw = state
    count = math.prod(shape)
    if dtype.hasobject:
        if dtype.kind != "O" or type(raw) is not list or len(raw) != count:
            raise refuse(f"holds an object array of shape {shape} without {count} items")
        budget.charge(count * dtype.itemsize, "numpy array")
        return
    nbytes = count * dtype.itemsize
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != nbytes:
        raise refuse(f"holds a numpy array of shape {shape} {dtype} without {nbytes} bytes")
    budget.charge(nbytes, "numpy array")


def check_scalar(dtype: Any, args: tuple[Any, ...], budget: AllocationBudget) -> None:
    """Accept ``scalar(dtype, <itemsize bytes>)`` and ``scalar(object dtype, value)``."""
    if not isinstance(dtype, np.dtype) or len(args) != 1:
        raise refuse("builds a numpy scalar without a dtype and a value")
    if dtype.hasobject:
        if dtype.kind != "O":
            raise refuse("builds a numpy scalar of a structured object dtype")
    elif type(args[0]) is not bytes or len(args[0]) != dtype.itemsize:
        raise refuse(f"builds a numpy {dtype} scalar from other than {dtype.itemsize} bytes")
    budget.charge(dtype.itemsize, "numpy scalar")
