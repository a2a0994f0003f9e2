"""Argument checks shared by the pre- and post-processing functions.

Every check raises :class:`ValueError` with an "expected X, got Y" message naming the argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_floating", "check_image_dtype", "check_shape", "check_size", "work_dtype"]


def check_shape(name: str, tensor: Tensor, expected: tuple[int | str, ...]) -> None:
    """Check the rank of ``tensor`` and the sizes of its fixed dimensions.

    Args:
        name: Argument name used in the error message.
        tensor: Tensor to check.
        expected: One entry per dimension: an int is a required size, a str (``"N"``, ``"H"``)
            stands for any size and only names the dimension in the message.

    Raises:
        ValueError: If ``tensor`` is not a tensor, has another rank or a fixed size differs.
    """
    if not isinstance(tensor, Tensor):
        msg = f"{name}: expected a torch.Tensor, got {type(tensor).__name__}"
        raise ValueError(msg)
    shape = tuple(tensor.shape)
    ok = len(shape) == len(expected) and all(
        isinstance(e, str) or s == e for s, e in zip(shape, expected, strict=True)
    )
    if not ok:
        wanted = (
            "(" + ", ".join(str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        )
        msg = f"{name}: expected shape {wanted}, got {shape}"
        raise ValueError(msg)


def check_floating(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` unless ``tensor`` has a floating-point dtype."""
    if not tensor.is_floating_point():
        msg = f"{name}: expected a floating-point dtype, got {tensor.dtype}"
        raise ValueError(msg)


def check_image_dtype(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` unless ``tensor`` is uint8 or floating point."""
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        msg = f"{name}: expected dtype uint8 or a floating-point dtype, got {tensor.dtype}"
        raise ValueError(msg)


def check_size(name: str, size: tuple[int, int], minimum: int = 1) -> None:
    """Raise ``ValueError`` unless ``size`` is a pair of ints, each at least ``minimum``."""
    ok = (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(s, int) and s >= minimum for s in size)
    )
    if not ok:
        msg = f"{name}: expected a (height, width) pair of ints >= {minimum}, got {size!r}"
        raise ValueError(msg)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype to compute geometry and decoding in: float64 stays float64, the rest uses float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32
