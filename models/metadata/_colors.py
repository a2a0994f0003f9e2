"""RGB color type, the named colors shared by the keypoint sets, and color validation.

The color values are the ones used by the keypoint and skeleton tables of the official
repository ``facebookresearch/sapiens`` (``pose/configs/_base_/datasets/*.py`` and
``lite/demo/classes_and_palettes.py``); the names are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BLUE",
    "GREEN",
    "LIGHT_BLUE",
    "ORANGE",
    "PINK",
    "RED",
    "RGB",
    "WHITE",
    "check_colors",
]

RGB = tuple[int, int, int]
"""An RGB triple, each channel an int in [0, 255]."""

BLUE: RGB = (51, 153, 255)
GREEN: RGB = (0, 255, 0)
ORANGE: RGB = (255, 128, 0)
PINK: RGB = (255, 153, 255)
LIGHT_BLUE: RGB = (102, 178, 255)
RED: RGB = (255, 51, 51)
WHITE: RGB = (255, 255, 255)


def check_colors(field: str, colors: Sequence[RGB], *, expected_len: int) -> None:
    """Check that ``colors`` holds ``expected_len`` RGB triples with channels in [0, 255].

    Args:
        field: Name of the field being checked, used in the error message.
        colors: The colors to check.
        expected_len: How many colors there must be.

    Raises:
        ValueError: If the count is wrong or a color is not three ints in [0, 255].
    """
    if len(colors) != expected_len:
        msg = f"{field}: expected {expected_len} colors, got {len(colors)}"
        raise ValueError(msg)
    for i, color in enumerate(colors):
        if len(color) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in color):
            msg = f"{field}[{i}]: expected 3 ints in [0, 255], got {color!r}"
            raise ValueError(msg)
