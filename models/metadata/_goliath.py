"""Keypoint facts of the 308-point Goliath ("Sociopticon") set predicted by Sapiens pose.

Facts (keypoint names and order, swap partners, skeleton links, RGB colors) come from the
official repository ``facebookresearch/sapiens`` (commit 3e829ac):
``pose/configs/_base_/datasets/goliath.py`` (``dataset_info``: ``keypoint_info`` with its ``swap``
names and ``skeleton_info``; the 36 ``teeth_*`` points of the 344-point original set are
removed, leaving 308) and the index-based copy in ``lite/demo/classes_and_palettes.py``
(``GOLIATH_KPTS_COLORS``, ``GOLIATH_SKELETON_INFO``). The representation is ours: names are
generated per region from stems, and swap partners follow from a side-token rule plus a small
renumbering table.

Index layout: 0-14 COCO body without wrists, 15-20 feet, 21-41 right hand (41 = right_wrist),
42-62 left hand (62 = left_wrist), 63-68 arm landmarks, 69 neck, 70-307 the 238 face points.
"""

from __future__ import annotations

import re

from models.metadata._coco import BODY_LINKS, FEET, Link, foot_links, hand_links
from models.metadata._colors import BLUE, RGB, WHITE
from models.metadata._names import FINGERS, SIDES, lr, mirror_side

__all__ = ["GOLIATH_LINKS", "GOLIATH_NAMES", "GOLIATH_POINT_COLORS", "GOLIATH_SWAPS"]


# --- body, feet, hands, arm landmarks (0-69) -----------------------------------------------------
def _hand(side: str) -> tuple[str, ...]:
    """Twenty finger points from tip to base, then the wrist."""
    joints = ("4", "3", "2", "_third_joint")
    return (*(f"{side}_{f}{j}" for f in FINGERS for j in joints), f"{side}_wrist")


_BODY = (
    "nose",
    *lr("eye", "ear", "shoulder", "elbow", "hip", "knee", "ankle"),
    *(f"{side}_{foot}" for side in SIDES for foot in FEET),
    *_hand("right"),
    *_hand("left"),
    *lr("olecranon", "cubital_fossa", "acromion"),
    "neck",
)

# --- face (70-307) -------------------------------------------------------------------------------
_MIDLINE = (
    "center_of_glabella",
    "center_of_nose_root",
    "tip_of_nose_bridge",
    *(f"midpoint_{i}_of_nose_bridge" for i in (1, 2, 3)),
    "center_of_labiomental_groove",
    "tip_of_chin",
)
_BROW_STEMS = (
    "upper_startpoint",
    "lower_startpoint",
    "end",
    "upper_midpoint_1",
    "lower_midpoint_1",
    "upper_midpoint_2",
    "upper_midpoint_3",
    "lower_midpoint_2",
    "lower_midpoint_3",
)
_BROWS = tuple(f"{stem}_of_{s}_eyebrow" for s in "rl" for stem in _BROW_STEMS)


def _stems(spec: str) -> tuple[str, ...]:
    """Split a space-separated list of stems, spelling a bare number ``n`` as ``midpoint_n``."""
    return tuple(f"midpoint_{s}" if s.isdigit() else s for s in spec.split())


# Eye contour stems per side; the eyelid line is the outer end followed by the crease stems.
_CREASE = {"l": _stems("6 2 5 centerpoint 4 1 3"), "r": _stems("3 1 4 centerpoint 5 2 6")}
_LASH = {
    "l": _stems("inner_end outer_end centerpoint 2 1 6 5 4 3"),
    "r": _stems("inner_end outer_end centerpoint 1 2 3 4 5 6"),
}


def _eye(s: str, lid: str, lines: tuple[str, ...]) -> tuple[str, ...]:
    """Points of one eye's ``upper`` or ``lower`` lid, line by line."""
    stems = {"lash": _LASH[s], "eyelid": ("outer_end", *_CREASE[s]), "crease": _CREASE[s]}
    return tuple(f"{s}_{stem}_of_{lid}_{line}_line" for line in lines for stem in stems[line])


_UPPER_EYE = {s: _eye(s, "upper", ("lash", "eyelid", "crease")) for s in "lr"}
_LOWER_EYE = {s: _eye(s, "lower", ("lash", "eyelid")) for s in "lr"}

_NOSE = (
    "tip_of_nose",
    "bottom_center_of_nose",
    "r_outer_corner_of_nose",
    "l_outer_corner_of_nose",
    *(f"{corner}_corner_of_{s}_nostril" for s in "rl" for corner in ("inner", "outer", "upper")),
)


def _lip(kind: str, centers: tuple[str, str]) -> tuple[str, ...]:
    """Corners, centers and midpoints of the ``outer`` or ``inner`` lip contour."""
    runs = (("upper", (1, 2)), ("lower", (1, 2)), ("upper", (3, 4, 5, 6)), ("lower", (3, 4, 5, 6)))
    return (
        f"r_{kind}_corner_of_mouth",
        f"l_{kind}_corner_of_mouth",
        *centers,
        *(f"midpoint_{i}_of_{half}_{kind}_lip" for half, ids in runs for i in ids),
    )


_OUTER_LIP = _lip("outer", ("center_of_cupid_bow", "center_of_lower_outer_lip"))
_INNER_LIP = _lip("inner", ("center_of_upper_inner_lip", "center_of_lower_inner_lip"))


def _ear(s: str, helix_second: int, helix_last: int) -> tuple[str, ...]:
    """Points of one ear; the two sides differ in where inner-helix points 2 and 8 sit."""
    helix = (1, helix_second, 3, 4, 5, 6, 7)
    stems = (
        "top_end_of_inferior_crus",
        "top_end_of_superior_crus",
        "start_of_antihelix",
        "end_of_antihelix",
        "midpoint_1_of_antihelix",
        "midpoint_1_of_inferior_crus",
        "midpoint_2_of_antihelix",
        "midpoint_3_of_antihelix",
        *(f"point_{i}_of_inner_helix" for i in helix),
        "highest_point_of_antitragus",
        "bottom_point_of_tragus",
        "protruding_point_of_tragus",
        "top_point_of_tragus",
        "start_point_of_crus_of_helix",
        "deepest_point_of_concha",
        "tip_of_ear_lobe",
        "midpoint_between_22_15",
        "bottom_connecting_point_of_ear_lobe",
        "top_connecting_point_of_helix",
        f"point_{helix_last}_of_inner_helix",
    )
    return tuple(f"{s}_{stem}" for stem in stems)


def _ring(s: str, part: str) -> tuple[str, ...]:
    """Center and eight border points (clock positions and midpoints) of an iris or pupil."""
    border = ("3", "midpoint_1", "12", "midpoint_4", "9", "midpoint_3", "6", "midpoint_2")
    return (f"{s}_center_of_{part}", *(f"{s}_border_of_{part}_{b}" for b in border))


# (names, color) per region, in index order.
_REGIONS: tuple[tuple[tuple[str, ...], RGB], ...] = (
    (_BODY, BLUE),
    (_MIDLINE + _BROWS, WHITE),
    (_UPPER_EYE["l"], (192, 64, 128)),
    (_UPPER_EYE["r"], (64, 32, 192)),
    (_LOWER_EYE["l"], (64, 192, 128)),
    (_LOWER_EYE["r"], (64, 192, 32)),
    (_NOSE, (0, 192, 0)),
    (_OUTER_LIP, (192, 0, 0)),
    (_INNER_LIP, (0, 192, 192)),
    (_ear("l", helix_second=2, helix_last=8), (200, 200, 0)),
    (_ear("r", helix_second=8, helix_last=2), (0, 200, 200)),
    (_ring("l", "iris"), (128, 192, 64)),
    (_ring("r", "iris"), (192, 32, 64)),
    (_ring("l", "pupil"), (192, 128, 64)),
    (_ring("r", "pupil"), (32, 192, 192)),
)

GOLIATH_NAMES: tuple[str, ...] = tuple(name for names, _ in _REGIONS for name in names)
GOLIATH_POINT_COLORS: tuple[RGB, ...] = tuple(c for names, c in _REGIONS for _ in names)

# --- swap partners -------------------------------------------------------------------------------
_LINE_RENUMBER = {1: 2, 2: 1, 3: 6, 4: 5, 5: 4, 6: 3}
# Landmarks whose swap partner, besides sitting on the other side, carries another number.
# Each pattern is matched against the side-mirrored name; group ``n`` is renumbered.
_RENUMBERING: tuple[tuple[re.Pattern[str], dict[int, int]], ...] = (
    (re.compile(r"(upper|lower)_midpoint_(?P<n>\d)_of_[lr]_eyebrow"), {2: 3, 3: 2}),
    (
        re.compile(r"[lr]_midpoint_(?P<n>\d)_of_(upper|lower)_(lash|eyelid|crease)_line"),
        _LINE_RENUMBER,
    ),
    (re.compile(r"midpoint_(?P<n>\d)_of_(upper|lower)_(outer|inner)_lip"), _LINE_RENUMBER),
    (re.compile(r"[lr]_point_(?P<n>\d)_of_inner_helix"), {2: 8, 8: 2}),
    (re.compile(r"[lr]_border_of_(iris|pupil)_(?P<n>\d+)"), {3: 9, 9: 3}),
    (re.compile(r"[lr]_border_of_(iris|pupil)_midpoint_(?P<n>\d)"), {1: 4, 4: 1, 2: 3, 3: 2}),
)


def _partner(name: str) -> str:
    """The swap partner of a Goliath keypoint name (the name itself for midline points)."""
    mirrored = mirror_side(name)
    for pattern, renumber in _RENUMBERING:
        if match := pattern.fullmatch(mirrored):
            n = int(match["n"])
            return f"{mirrored[: match.start('n')]}{renumber.get(n, n)}{mirrored[match.end('n') :]}"
    return mirrored


GOLIATH_SWAPS: dict[str, str] = {
    name: partner for name in GOLIATH_NAMES if (partner := _partner(name)) != name
}

GOLIATH_LINKS: tuple[Link, ...] = (
    *BODY_LINKS,
    *foot_links(),
    *hand_links(
        "{side}_wrist",
        ("{side}_{finger}_third_joint", "{side}_{finger}2", "{side}_{finger}3", "{side}_{finger}4"),
    ),
)
