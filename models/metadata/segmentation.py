"""Class sets predicted by the Sapiens body-part segmentation heads: names, palette, flip pairs.

``GOLIATH_SEG_28`` is the 28-class Goliath body-part set (background included) of Sapiens. Its
facts come from the official repository ``facebookresearch/sapiens`` (commit 3e829ac):
``seg/mmseg/datasets/goliath.py`` and ``lite/demo/classes_and_palettes.py`` (the 34-class
original list and palette, and the six classes removed from it) and the seg configs
``seg/configs/sapiens_seg/goliath/sapiens_*_goliath-1024x768.py`` (the left/right label pairs
swapped under a horizontal flip).

``SAPIENS2_SEG_29`` is the 29-class set of Sapiens2 (SPEC-sapiens2 §6.1): ``Eyeglass`` inserted
at label 2, every other name and color as in the 28-class set. :func:`seg_classes` picks the
set of a model family.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.metadata._colors import RGB, check_colors

__all__ = ["GOLIATH_SEG_28", "SAPIENS2_SEG_29", "SegClassSet", "seg_classes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SegClassSet:
    """The metadata of one segmentation label set, aligned on the class index.

    Attributes:
        name: Short identifier of the set, e.g. ``"goliath"``.
        names: Class names; index ``i`` is logit channel ``i`` and label value ``i``.
        palette: RGB color of each class, aligned with ``names``.
        flip_pairs: Pairs of labels that trade places under a horizontal flip.

    Raises:
        ValueError: If the palette length differs from the class count, names repeat, or a
            flip pair is out of range, maps a label to itself or reuses a label.

    Example:
        >>> from models.metadata import GOLIATH_SEG_28
        >>> GOLIATH_SEG_28.names[GOLIATH_SEG_28.flip_indices[5]]
        'Right_Hand'
    """

    name: str
    names: tuple[str, ...]
    palette: tuple[RGB, ...]
    flip_pairs: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        """Validate lengths, uniqueness and the flip pairs."""
        n = len(self.names)
        where = f"class set {self.name!r}"
        if n == 0:
            msg = f"{where}: expected at least one class name, got none"
            raise ValueError(msg)
        if len(set(self.names)) != n:
            dupes = sorted({c for c in self.names if self.names.count(c) > 1})
            msg = f"{where}: expected unique class names, got duplicates {dupes}"
            raise ValueError(msg)
        check_colors(f"{where}: palette", self.palette, expected_len=n)
        seen: set[int] = set()
        for p, pair in enumerate(self.flip_pairs):
            if len(pair) != 2 or not all(0 <= i < n for i in pair) or pair[0] == pair[1]:
                msg = (
                    f"{where}: flip_pairs[{p}]: expected two distinct labels in [0, {n}), "
                    f"got {pair!r}"
                )
                raise ValueError(msg)
            if reused := seen & set(pair):
                msg = (
                    f"{where}: flip_pairs[{p}]: expected each label in one pair at most, "
                    f"got {sorted(reused)} again"
                )
                raise ValueError(msg)
            seen.update(pair)

    @property
    def num_classes(self) -> int:
        """The number of classes (logit channels), background included."""
        return len(self.names)

    @property
    def flip_indices(self) -> tuple[int, ...]:
        """Label permutation under a horizontal flip: ``flip_indices[label]`` is its mirror."""
        perm = list(range(len(self.names)))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)


# The original 34 Goliath classes with their colors, in label order.
_ORIGINAL_34: tuple[tuple[str, RGB], ...] = (
    ("Background", (50, 50, 50)),
    ("Apparel", (255, 218, 0)),
    ("Chair", (102, 204, 0)),
    ("Eyeglass_Frame", (14, 0, 204)),
    ("Eyeglass_Lenses", (0, 204, 160)),
    ("Face_Neck", (128, 200, 255)),
    ("Hair", (255, 0, 109)),
    ("Headset", (0, 255, 36)),
    ("Left_Foot", (189, 0, 204)),
    ("Left_Hand", (255, 0, 218)),
    ("Left_Lower_Arm", (0, 160, 204)),
    ("Left_Lower_Leg", (0, 255, 145)),
    ("Left_Shoe", (204, 0, 131)),
    ("Left_Sock", (182, 0, 255)),
    ("Left_Upper_Arm", (255, 109, 0)),
    ("Left_Upper_Leg", (0, 255, 255)),
    ("Lower_Clothing", (72, 0, 255)),
    ("Lower_Spandex", (204, 43, 0)),
    ("Right_Foot", (204, 131, 0)),
    ("Right_Hand", (255, 0, 0)),
    ("Right_Lower_Arm", (72, 255, 0)),
    ("Right_Lower_Leg", (189, 204, 0)),
    ("Right_Shoe", (182, 255, 0)),
    ("Right_Sock", (102, 0, 204)),
    ("Right_Upper_Arm", (32, 72, 204)),
    ("Right_Upper_Leg", (0, 145, 255)),
    ("Torso", (14, 204, 0)),
    ("Upper_Clothing", (0, 128, 72)),
    ("Visible_Badge", (204, 0, 43)),
    ("Lower_Lip", (235, 205, 119)),
    ("Upper_Lip", (115, 227, 112)),
    ("Lower_Teeth", (157, 113, 143)),
    ("Upper_Teeth", (132, 93, 50)),
    ("Tongue", (82, 21, 114)),
)
# Classes dropped from the released models; the rest keep their relative order and color.
_REMOVED = frozenset(
    {"Chair", "Eyeglass_Frame", "Eyeglass_Lenses", "Headset", "Lower_Spandex", "Visible_Badge"}
)
_KEPT = tuple((name, color) for name, color in _ORIGINAL_34 if name not in _REMOVED)

GOLIATH_SEG_28 = SegClassSet(
    name="goliath",
    names=tuple(name for name, _ in _KEPT),
    palette=tuple(color for _, color in _KEPT),
    flip_pairs=((4, 13), (5, 14), (6, 15), (7, 16), (8, 17), (9, 18), (10, 19), (11, 20)),
)
"""The 28 Goliath body-part classes (0 = background) of the Sapiens seg heads."""


# The Sapiens2 classes (SPEC-sapiens2 §6.1): the 28 with "Eyeglass" (the merged eyeglass
# frame and lenses) inserted at label 2; every other name and colour is unchanged.
_SAPIENS2_29: tuple[tuple[str, RGB], ...] = (*_KEPT[:2], ("Eyeglass", (14, 204, 182)), *_KEPT[2:])

SAPIENS2_SEG_29 = SegClassSet(
    name="sapiens2",
    names=tuple(name for name, _ in _SAPIENS2_29),
    palette=tuple(color for _, color in _SAPIENS2_29),
    flip_pairs=((5, 14), (6, 15), (7, 16), (8, 17), (9, 18), (10, 19), (11, 20), (12, 21)),
)
"""The 29 body-part classes (0 = background, 2 = Eyeglass) of the Sapiens2 seg heads."""

_BY_FAMILY = {"sapiens": GOLIATH_SEG_28, "sapiens2": SAPIENS2_SEG_29}


def seg_classes(family: str) -> SegClassSet:
    """The class set the seg heads of a model family predict.

    Args:
        family: ``sapiens`` (28 classes) or ``sapiens2`` (29 classes).

    Raises:
        ValueError: for an unknown family.

    Example:
        >>> seg_classes("sapiens2").names[2]
        'Eyeglass'
    """
    if family not in _BY_FAMILY:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(_BY_FAMILY)}")
    return _BY_FAMILY[family]
