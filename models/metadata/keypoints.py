"""Keypoint sets predicted by the Sapiens pose heads: names, flip permutation, skeleton, colors.

Three sets, keyed by their keypoint count K (the number of heatmap channels):

* ``GOLIATH_308``: the Goliath ("Sociopticon") set without its 36 teeth points;
* ``COCO_WHOLEBODY_133``: COCO-WholeBody (body, feet, 68 face points, two hands);
* ``COCO_17``: the COCO body set.

The facts come from the official repository ``facebookresearch/sapiens`` (commit 3e829ac):
``pose/configs/_base_/datasets/goliath.py``, ``pose/configs/_base_/datasets/coco_wholebody.py``,
``pose/configs/_base_/datasets/coco.py`` and ``lite/demo/classes_and_palettes.py``. As in the
official code, ``flip_indices`` is derived from each keypoint's swap partner name, and a
keypoint without a partner maps to itself. The per-set data lives in ``_goliath.py`` and
``_coco.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from models.metadata._coco import (
    BODY_LINKS,
    COCO17_NAMES,
    COCO17_POINT_COLORS,
    WHOLEBODY_LINKS,
    WHOLEBODY_NAMES,
    WHOLEBODY_POINT_COLORS,
    WHOLEBODY_SWAPS,
    Link,
    side_swaps,
)
from models.metadata._colors import RGB, check_colors
from models.metadata._goliath import (
    GOLIATH_LINKS,
    GOLIATH_NAMES,
    GOLIATH_POINT_COLORS,
    GOLIATH_SWAPS,
)

__all__ = [
    "COCO_17",
    "COCO_WHOLEBODY_133",
    "GOLIATH_308",
    "KEYPOINT_SETS",
    "KeypointSet",
    "flip_indices_from_swaps",
    "keypoint_set",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeypointSet:
    """The metadata of one keypoint set, aligned on the keypoint index.

    Attributes:
        name: Short identifier of the set, e.g. ``"goliath"``.
        names: Keypoint names; index ``i`` is heatmap channel ``i``.
        flip_indices: ``flip_indices[i]`` is the index of keypoint ``i``'s mirror under a
            horizontal flip (``i`` itself for midline points). An involution.
        skeleton: Links to draw, as pairs of keypoint indices.
        link_colors: RGB color of each link, aligned with ``skeleton``.
        point_colors: RGB color of each keypoint, aligned with ``names``.

    Raises:
        ValueError: If the fields disagree in length, an index is out of range, names repeat,
            ``flip_indices`` is not an involution or a color is not an RGB triple.

    Example:
        >>> from models.metadata import keypoint_set
        >>> kps = keypoint_set(17)
        >>> kps.names[kps.flip_indices[kps.index("left_wrist")]]
        'right_wrist'
    """

    name: str
    names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    skeleton: tuple[tuple[int, int], ...]
    link_colors: tuple[RGB, ...]
    point_colors: tuple[RGB, ...]

    def __post_init__(self) -> None:
        """Validate lengths, index ranges, uniqueness and the flip involution."""
        k = len(self.names)
        where = f"keypoint set {self.name!r}"
        if k == 0:
            msg = f"{where}: expected at least one keypoint name, got none"
            raise ValueError(msg)
        if len(set(self.names)) != k:
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            msg = f"{where}: expected unique keypoint names, got duplicates {dupes}"
            raise ValueError(msg)
        if len(self.flip_indices) != k:
            got = len(self.flip_indices)
            msg = f"{where}: flip_indices: expected {k} entries (one per name), got {got}"
            raise ValueError(msg)
        for i, j in enumerate(self.flip_indices):
            if not 0 <= j < k:
                msg = f"{where}: flip_indices[{i}]: expected an index in [0, {k}), got {j}"
                raise ValueError(msg)
            if self.flip_indices[j] != i:
                msg = (
                    f"{where}: flip_indices must be an involution: expected "
                    f"flip_indices[{j}] == {i}, got {self.flip_indices[j]}"
                )
                raise ValueError(msg)
        for n, link in enumerate(self.skeleton):
            if len(link) != 2 or not all(0 <= i < k for i in link) or link[0] == link[1]:
                msg = (
                    f"{where}: skeleton[{n}]: expected two distinct indices in [0, {k}), "
                    f"got {link!r}"
                )
                raise ValueError(msg)
        check_colors(f"{where}: link_colors", self.link_colors, expected_len=len(self.skeleton))
        check_colors(f"{where}: point_colors", self.point_colors, expected_len=k)

    @property
    def num_keypoints(self) -> int:
        """The number of keypoints K (heatmap channels)."""
        return len(self.names)

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        """The mirror pairs ``(i, j)`` with ``i < j``; midline points are left out."""
        return tuple((i, j) for i, j in enumerate(self.flip_indices) if i < j)

    def index(self, name: str) -> int:
        """The index of a keypoint name.

        Args:
            name: A keypoint name of this set.

        Returns:
            Its index in ``names``.

        Raises:
            ValueError: If the set has no keypoint of that name.
        """
        try:
            return self.names.index(name)
        except ValueError as e:
            msg = f"keypoint set {self.name!r} has no keypoint {name!r} (K={len(self.names)})"
            raise ValueError(msg) from e


def flip_indices_from_swaps(names: tuple[str, ...], swaps: Mapping[str, str]) -> tuple[int, ...]:
    """Turn swap partner names into the flip permutation.

    Args:
        names: Keypoint names in index order.
        swaps: ``name -> partner name``; a name that is absent maps to itself.

    Returns:
        ``flip_indices`` with ``flip_indices[i] == names.index(swaps[names[i]])``.

    Raises:
        ValueError: If ``swaps`` mentions a name that is not in ``names``.
    """
    index = {name: i for i, name in enumerate(names)}
    if unknown := sorted((set(swaps) | set(swaps.values())) - index.keys()):
        msg = f"swaps: expected names from the keypoint set, got unknown {unknown[:10]}"
        raise ValueError(msg)
    return tuple(index[swaps.get(name, name)] for name in names)


def _build(
    name: str,
    names: tuple[str, ...],
    swaps: Mapping[str, str],
    links: tuple[Link, ...],
    point_colors: tuple[RGB, ...],
) -> KeypointSet:
    """Resolve name-based swaps and links to indices and build the set."""
    index = {n: i for i, n in enumerate(names)}
    return KeypointSet(
        name=name,
        names=names,
        flip_indices=flip_indices_from_swaps(names, swaps),
        skeleton=tuple((index[a], index[b]) for (a, b), _ in links),
        link_colors=tuple(color for _, color in links),
        point_colors=point_colors,
    )


GOLIATH_308 = _build("goliath", GOLIATH_NAMES, GOLIATH_SWAPS, GOLIATH_LINKS, GOLIATH_POINT_COLORS)
"""The 308 Goliath keypoints predicted by the Sapiens pose-308 heads."""

COCO_WHOLEBODY_133 = _build(
    "coco_wholebody", WHOLEBODY_NAMES, WHOLEBODY_SWAPS, WHOLEBODY_LINKS, WHOLEBODY_POINT_COLORS
)
"""The 133 COCO-WholeBody keypoints."""

COCO_17 = _build("coco", COCO17_NAMES, side_swaps(COCO17_NAMES), BODY_LINKS, COCO17_POINT_COLORS)
"""The 17 COCO body keypoints."""

KEYPOINT_SETS: dict[int, KeypointSet] = {
    s.num_keypoints: s for s in (GOLIATH_308, COCO_WHOLEBODY_133, COCO_17)
}
"""Keypoint sets by keypoint count K (308, 133, 17)."""


def keypoint_set(k: int) -> KeypointSet:
    """The keypoint set of a pose head with ``k`` output channels.

    Args:
        k: Number of keypoints (heatmap channels): 308, 133 or 17.

    Returns:
        The matching :class:`KeypointSet`.

    Raises:
        ValueError: If no set has ``k`` keypoints.
    """
    try:
        return KEYPOINT_SETS[k]
    except KeyError as e:
        msg = f"no keypoint set with K={k}; expected one of {sorted(KEYPOINT_SETS)}"
        raise ValueError(msg) from e
