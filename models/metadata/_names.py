"""Helpers to spell keypoint names and their left/right mirrors.

Keypoint names mark their side with a ``_``-separated token: ``left``/``right`` for body points
(``left_wrist``) and ``l``/``r`` for the Goliath face points (``l_center_of_iris``,
``end_of_r_eyebrow``). Mirroring a name swaps that token.
"""

from __future__ import annotations

__all__ = ["FINGERS", "SIDES", "lr", "mirror_side", "side_of"]

SIDES: tuple[str, str] = ("left", "right")
"""Body side tokens, in the order the keypoint sets list them."""

FINGERS: tuple[str, ...] = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
"""Finger stems shared by COCO-WholeBody and Goliath, thumb first."""

_MIRROR = {"left": "right", "right": "left", "l": "r", "r": "l"}


def lr(*parts: str) -> tuple[str, ...]:
    """Interleave left and right names: ``lr("eye", "ear")`` -> left_eye, right_eye, left_ear, ...

    Args:
        parts: Body-part stems.

    Returns:
        The names ``left_<part>``, ``right_<part>`` for each part, in order.
    """
    return tuple(f"{side}_{part}" for part in parts for side in SIDES)


def mirror_side(name: str) -> str:
    """Swap the side token of a keypoint name (``left`` <-> ``right``, ``l`` <-> ``r``).

    Args:
        name: A keypoint name.

    Returns:
        The name with its side token swapped; the name itself if it has none.
    """
    return "_".join(_MIRROR.get(token, token) for token in name.split("_"))


def side_of(name: str) -> str | None:
    """The side a keypoint name refers to.

    Args:
        name: A keypoint name.

    Returns:
        ``"left"``, ``"right"`` or ``None`` for a name without a side token.
    """
    for token in name.split("_"):
        if token in ("left", "l"):
            return "left"
        if token in ("right", "r"):
            return "right"
    return None
