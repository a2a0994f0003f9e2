"""Keypoint facts of COCO (17) and COCO-WholeBody (133), plus the links Goliath shares with them.

Facts (keypoint names and order, swap partners, skeleton links, RGB colors) come from the
official repository ``facebookresearch/sapiens`` (commit 3e829ac):
``pose/configs/_base_/datasets/coco.py``, ``pose/configs/_base_/datasets/coco_wholebody.py`` and
the index-based copy in ``lite/demo/classes_and_palettes.py``. The representation is ours:
names are generated from stems, links are name pairs resolved to indices by
:mod:`models.metadata.keypoints`, and swaps are ``name -> partner`` maps (a point that is
absent maps to itself).
"""

from __future__ import annotations

from itertools import pairwise

from models.metadata._colors import BLUE, GREEN, LIGHT_BLUE, ORANGE, PINK, RED, RGB, WHITE
from models.metadata._names import FINGERS, SIDES, lr, mirror_side

__all__ = [
    "BODY_LINKS",
    "COCO17_NAMES",
    "COCO17_POINT_COLORS",
    "FEET",
    "FINGER_COLORS",
    "WHOLEBODY_LINKS",
    "WHOLEBODY_NAMES",
    "WHOLEBODY_POINT_COLORS",
    "WHOLEBODY_SWAPS",
    "Link",
    "foot_links",
    "hand_links",
    "side_swaps",
]

Link = tuple[tuple[str, str], RGB]
"""A skeleton link as ``((name_a, name_b), rgb)``."""

SIDE_COLORS: dict[str, RGB] = {"left": GREEN, "right": ORANGE}
FINGER_COLORS: dict[str, RGB] = dict(
    zip(FINGERS, (ORANGE, PINK, LIGHT_BLUE, RED, GREEN), strict=True)
)
FEET: tuple[str, ...] = ("big_toe", "small_toe", "heel")

# --- COCO-17 -------------------------------------------------------------------------------------
COCO17_NAMES: tuple[str, ...] = (
    "nose",
    *lr("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"),
)
# Head points are blue; limb points take their side's color.
COCO17_POINT_COLORS: tuple[RGB, ...] = (BLUE,) * 5 + tuple(
    SIDE_COLORS[name.split("_")[0]] for name in COCO17_NAMES[5:]
)

BODY_LINKS: tuple[Link, ...] = (
    (("left_ankle", "left_knee"), GREEN),
    (("left_knee", "left_hip"), GREEN),
    (("right_ankle", "right_knee"), ORANGE),
    (("right_knee", "right_hip"), ORANGE),
    (("left_hip", "right_hip"), BLUE),
    (("left_shoulder", "left_hip"), BLUE),
    (("right_shoulder", "right_hip"), BLUE),
    (("left_shoulder", "right_shoulder"), BLUE),
    (("left_shoulder", "left_elbow"), GREEN),
    (("right_shoulder", "right_elbow"), ORANGE),
    (("left_elbow", "left_wrist"), GREEN),
    (("right_elbow", "right_wrist"), ORANGE),
    (("left_eye", "right_eye"), BLUE),
    (("nose", "left_eye"), BLUE),
    (("nose", "right_eye"), BLUE),
    (("left_eye", "left_ear"), BLUE),
    (("right_eye", "right_ear"), BLUE),
    (("left_ear", "left_shoulder"), BLUE),
    (("right_ear", "right_shoulder"), BLUE),
)
"""The 19 COCO body links; COCO-WholeBody and Goliath start with the same 19."""


def side_swaps(names: tuple[str, ...]) -> dict[str, str]:
    """Swap partners of every name that carries a side token.

    Args:
        names: Keypoint names.

    Returns:
        ``name -> mirror_side(name)`` for each name whose mirror differs from itself.
    """
    return {name: mirror_side(name) for name in names if mirror_side(name) != name}


def foot_links() -> tuple[Link, ...]:
    """Ankle-to-foot links: the left foot in green, then the right foot in orange.

    Returns:
        Six links, ``(<side>_ankle, <side>_<foot point>)``.
    """
    return tuple(
        ((f"{side}_ankle", f"{side}_{foot}"), SIDE_COLORS[side]) for side in SIDES for foot in FEET
    )


def hand_links(root: str, joints: tuple[str, ...]) -> tuple[Link, ...]:
    """Finger chains of both hands, left hand first, each finger in its own color.

    Args:
        root: Format string of the hand root, e.g. ``"{side}_wrist"``.
        joints: Format strings of the four finger points from the palm outwards, each taking
            ``side`` and ``finger``, e.g. ``("{side}_{finger}1", ...)``.

    Returns:
        Twenty links per hand: root -> joint 1 -> ... -> joint 4 for each finger.
    """
    links: list[Link] = []
    for side in SIDES:
        for finger in FINGERS:
            chain = [root.format(side=side)]
            chain += [joint.format(side=side, finger=finger) for joint in joints]
            links += [((a, b), FINGER_COLORS[finger]) for a, b in pairwise(chain)]
    return tuple(links)


# --- COCO-WholeBody-133 --------------------------------------------------------------------------
_WB_FACE = tuple(f"face-{i}" for i in range(68))
_WB_HAND = tuple(
    name
    for side in SIDES
    for name in (
        f"{side}_hand_root",
        *(f"{side}_{finger}{j}" for finger in FINGERS for j in range(1, 5)),
    )
)
WHOLEBODY_NAMES: tuple[str, ...] = (
    *COCO17_NAMES,
    *(f"{side}_{foot}" for side in SIDES for foot in FEET),
    *_WB_FACE,
    *_WB_HAND,
)


def _face_pairs() -> tuple[tuple[int, int], ...]:
    """Mirror pairs of the 68 face points (0-based within the face block)."""
    # Runs that read the same backwards under a flip: jaw, brows, nostrils, lip contours.
    runs = ((0, 16), (17, 26), (31, 35), (48, 54), (55, 59), (60, 64), (65, 67))
    pairs = [(lo + k, hi - k) for lo, hi in runs for k in range((hi - lo + 1) // 2)]
    # The two eye rings start at different corners, so they pair up explicitly.
    pairs += zip((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46), strict=True)
    return tuple(pairs)


WHOLEBODY_SWAPS: dict[str, str] = {
    **side_swaps(WHOLEBODY_NAMES),
    **{_WB_FACE[a]: _WB_FACE[b] for a, b in _face_pairs()},
    **{_WB_FACE[b]: _WB_FACE[a] for a, b in _face_pairs()},
}

WHOLEBODY_POINT_COLORS: tuple[RGB, ...] = (
    *COCO17_POINT_COLORS,
    *(ORANGE,) * len(FEET) * 2,
    *(WHITE,) * len(_WB_FACE),
    *(
        color
        for _side in SIDES
        for color in (WHITE, *(FINGER_COLORS[finger] for finger in FINGERS for _ in range(4)))
    ),
)

WHOLEBODY_LINKS: tuple[Link, ...] = (
    *BODY_LINKS,
    *foot_links(),
    *hand_links(
        "{side}_hand_root",
        ("{side}_{finger}1", "{side}_{finger}2", "{side}_{finger}3", "{side}_{finger}4"),
    ),
)
