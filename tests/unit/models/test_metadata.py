"""Tests for models.metadata: keypoint sets and segmentation class sets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest

from models.metadata import (
    COCO_17,
    COCO_WHOLEBODY_133,
    GOLIATH_308,
    GOLIATH_SEG_28,
    KEYPOINT_SETS,
    KeypointSet,
    SegClassSet,
    flip_indices_from_swaps,
    keypoint_set,
)
from models.metadata._names import mirror_side, side_of

does_not_raise = nullcontext


def _raises(match: str) -> AbstractContextManager[Any]:
    """``pytest.raises(ValueError, match=match)``, shortened for the tables below."""
    return pytest.raises(ValueError, match=match)


ALL_SETS = [GOLIATH_308, COCO_WHOLEBODY_133, COCO_17]


def _digest(*parts: object) -> str:
    """sha256 of the compact JSON of ``parts`` (tuples serialise as lists)."""
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


# --- keypoint sets: counts and structure ---------------------------------------------------------
@pytest.mark.parametrize(
    ("kps", "k", "links", "self_symmetric"),
    [(GOLIATH_308, 308, 65, 16), (COCO_WHOLEBODY_133, 133, 65, 11), (COCO_17, 17, 19, 1)],
    ids=["goliath", "wholebody", "coco"],
)
def test_counts(kps: KeypointSet, k: int, links: int, self_symmetric: int) -> None:
    assert kps.num_keypoints == k
    assert len(kps.names) == len(kps.flip_indices) == len(kps.point_colors) == k
    assert len(kps.skeleton) == len(kps.link_colors) == links
    assert sum(i == j for i, j in enumerate(kps.flip_indices)) == self_symmetric
    assert len(kps.flip_pairs) == (k - self_symmetric) // 2


@pytest.mark.parametrize("kps", ALL_SETS, ids=lambda s: s.name)
def test_flip_is_an_involution(kps: KeypointSet) -> None:
    flip = kps.flip_indices
    assert sorted(flip) == list(range(kps.num_keypoints))
    assert all(flip[flip[i]] == i for i in range(kps.num_keypoints))


@pytest.mark.parametrize("kps", ALL_SETS, ids=lambda s: s.name)
def test_skeleton_indices_in_range(kps: KeypointSet) -> None:
    for a, b in kps.skeleton:
        assert 0 <= a < kps.num_keypoints
        assert 0 <= b < kps.num_keypoints
        assert a != b


@pytest.mark.parametrize("kps", ALL_SETS, ids=lambda s: s.name)
def test_partners_sit_on_opposite_sides(kps: KeypointSet) -> None:
    opposite = {"left": "right", "right": "left", None: None}
    for i, j in enumerate(kps.flip_indices):
        assert side_of(kps.names[j]) == opposite[side_of(kps.names[i])], (i, kps.names[i])


@pytest.mark.parametrize(
    ("kps", "indices"),
    [
        (GOLIATH_308, range(70)),  # body, feet, hands, arm landmarks, neck
        (COCO_WHOLEBODY_133, [*range(23), *range(91, 133)]),  # all but the 68 face points
        (COCO_17, range(17)),
    ],
    ids=["goliath", "wholebody", "coco"],
)
def test_partner_is_the_side_mirrored_name(kps: KeypointSet, indices: range | list[int]) -> None:
    for i in indices:
        assert kps.names[kps.flip_indices[i]] == mirror_side(kps.names[i])


def test_goliath_layout() -> None:
    names = GOLIATH_308.names
    assert (names[0], names[41], names[62], names[69]) == (
        "nose",
        "right_wrist",
        "left_wrist",
        "neck",
    )
    assert GOLIATH_308.flip_indices[41] == 62
    assert names[5:7] == ("left_shoulder", "right_shoulder")
    assert names[15:21] == (
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
    )
    assert all(n.startswith("right_") for n in names[21:42])
    assert all(n.startswith("left_") for n in names[42:63])
    assert (names[21], names[24], names[40]) == (
        "right_thumb4",
        "right_thumb_third_joint",
        "right_pinky_finger_third_joint",
    )
    assert len(names[70:]) == 238
    assert (names[70], names[307]) == ("center_of_glabella", "r_border_of_pupil_midpoint_2")
    assert not any(n.startswith("teeth") for n in names)


def test_goliath_self_symmetric_points() -> None:
    midline = {GOLIATH_308.names[i] for i, j in enumerate(GOLIATH_308.flip_indices) if i == j}
    assert midline == {
        "nose",
        "neck",
        "center_of_glabella",
        "center_of_nose_root",
        "tip_of_nose_bridge",
        "midpoint_1_of_nose_bridge",
        "midpoint_2_of_nose_bridge",
        "midpoint_3_of_nose_bridge",
        "center_of_labiomental_groove",
        "tip_of_chin",
        "tip_of_nose",
        "bottom_center_of_nose",
        "center_of_cupid_bow",
        "center_of_lower_outer_lip",
        "center_of_upper_inner_lip",
        "center_of_lower_inner_lip",
    }


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # Official face partners that are not a plain side swap of the name.
        ("upper_midpoint_2_of_r_eyebrow", "upper_midpoint_3_of_l_eyebrow"),
        ("l_midpoint_2_of_upper_lash_line", "r_midpoint_1_of_upper_lash_line"),
        ("l_midpoint_6_of_lower_eyelid_line", "r_midpoint_3_of_lower_eyelid_line"),
        ("midpoint_3_of_upper_outer_lip", "midpoint_6_of_upper_outer_lip"),
        ("midpoint_1_of_lower_inner_lip", "midpoint_2_of_lower_inner_lip"),
        ("l_point_2_of_inner_helix", "r_point_8_of_inner_helix"),
        ("l_border_of_iris_3", "r_border_of_iris_9"),
        ("l_border_of_pupil_midpoint_3", "r_border_of_pupil_midpoint_2"),
        ("l_border_of_iris_12", "r_border_of_iris_12"),
    ],
)
def test_goliath_face_partners(a: str, b: str) -> None:
    flip = GOLIATH_308.flip_indices
    assert flip[GOLIATH_308.index(a)] == GOLIATH_308.index(b)


def test_wholebody_face_partners() -> None:
    kps = COCO_WHOLEBODY_133
    pairs = {kps.names[i]: kps.names[j] for i, j in enumerate(kps.flip_indices)}
    assert pairs["face-0"] == "face-16"
    assert pairs["face-8"] == "face-8"
    assert pairs["face-36"] == "face-45"
    assert pairs["face-40"] == "face-47"
    assert pairs["face-65"] == "face-67"


def test_sets_share_the_coco_body() -> None:
    assert COCO_WHOLEBODY_133.names[:17] == COCO_17.names
    assert COCO_WHOLEBODY_133.skeleton[:19] == COCO_17.skeleton
    # Goliath has the same first 25 links (body + feet), by name.
    by_name = [
        [tuple(s.names[i] for i in link) for link in s.skeleton[:25]]
        for s in (GOLIATH_308, COCO_WHOLEBODY_133)
    ]
    assert by_name[0] == by_name[1]
    assert GOLIATH_308.link_colors == COCO_WHOLEBODY_133.link_colors


@pytest.mark.parametrize(
    ("kps", "expected"),
    [
        (GOLIATH_308, "cedf8a23a149706944c060dadda4eafc78438c771f09d558f89683364871afd0"),
        (COCO_WHOLEBODY_133, "007e7c352c2288eb5dfa9fba02d39fea8b6c19bf07fc97062097ad4835cd3c2c"),
        (COCO_17, "9886cebf0855fd1621dae2246a0b00775904085b43b78d8aa69414a2c7484e2f"),
    ],
    ids=["goliath", "wholebody", "coco"],
)
def test_matches_official_fingerprint(kps: KeypointSet, expected: str) -> None:
    # Digests of (names, flip, skeleton, link colors, point colors) computed once from the
    # official facebookresearch/sapiens files at commit 3e829ac (pose/configs/_base_/datasets/*.py
    # after teeth removal; identical to lite/demo/classes_and_palettes.py).
    got = _digest(kps.names, kps.flip_indices, kps.skeleton, kps.link_colors, kps.point_colors)
    assert got == expected


def test_point_colors() -> None:
    assert set(GOLIATH_308.point_colors[:70]) == {(51, 153, 255)}
    assert COCO_17.point_colors[5:7] == ((0, 255, 0), (255, 128, 0))


# --- keypoint set lookup -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "expectation"),
    [
        (308, does_not_raise()),
        (133, does_not_raise()),
        (17, does_not_raise()),
        (21, pytest.raises(ValueError, match=r"K=21; expected one of \[17, 133, 308\]")),
    ],
)
def test_keypoint_set_lookup(k: int, expectation: AbstractContextManager[Any]) -> None:
    with expectation:
        assert keypoint_set(k) is KEYPOINT_SETS[k]
        assert keypoint_set(k).num_keypoints == k


def test_index_of_unknown_name() -> None:
    assert COCO_17.index("left_wrist") == 9
    with pytest.raises(ValueError, match="has no keypoint 'tail'"):
        COCO_17.index("tail")


def test_flip_indices_from_swaps() -> None:
    names = ("nose", "left_eye", "right_eye")
    swaps = {"left_eye": "right_eye", "right_eye": "left_eye"}
    assert flip_indices_from_swaps(names, swaps) == (0, 2, 1)
    with pytest.raises(ValueError, match=r"unknown \['left_ear'\]"):
        flip_indices_from_swaps(names, {"left_eye": "left_ear"})


def test_sets_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        COCO_17.name = "other"  # type: ignore[misc]


# --- KeypointSet validation ----------------------------------------------------------------------
_OK: dict[str, Any] = {
    "name": "toy",
    "names": ("nose", "left_eye", "right_eye"),
    "flip_indices": (0, 2, 1),
    "skeleton": ((0, 1), (0, 2)),
    "link_colors": ((1, 2, 3), (4, 5, 6)),
    "point_colors": ((0, 0, 0),) * 3,
}


@pytest.mark.parametrize(
    ("changes", "expectation"),
    [
        ({}, does_not_raise()),
        ({"names": ()}, _raises("expected at least one keypoint name, got none")),
        ({"names": ("nose", "eye", "eye")}, _raises(r"got duplicates \['eye'\]")),
        ({"flip_indices": (0, 2)}, _raises(r"flip_indices: expected 3 entries .*, got 2")),
        ({"flip_indices": (0, 3, 1)}, _raises(r"flip_indices\[1\]: expected .* \[0, 3\), got 3")),
        ({"flip_indices": (1, 2, 0)}, _raises("must be an involution")),
        ({"skeleton": ((0, 1), (0, 5))}, _raises(r"skeleton\[1\]: expected .*got \(0, 5\)")),
        ({"skeleton": ((0, 1), (2, 2))}, _raises(r"skeleton\[1\]: expected two distinct")),
        ({"link_colors": ((1, 2, 3),)}, _raises("link_colors: expected 2 colors, got 1")),
        ({"point_colors": ((0, 0, 0),) * 4}, _raises("point_colors: expected 3 colors, got 4")),
        (
            {"point_colors": ((0, 0, 0), (0, 0, 256), (0, 0, 0))},
            _raises(r"point_colors\[1\]: expected 3 ints in \[0, 255\], got \(0, 0, 256\)"),
        ),
    ],
)
def test_keypoint_set_validation(
    changes: dict[str, Any], expectation: AbstractContextManager[Any]
) -> None:
    with expectation:
        KeypointSet(**{**_OK, **changes})


# --- segmentation --------------------------------------------------------------------------------
# Spec section 2.2 order.
# fmt: off
SEG_28 = (
    "Background", "Apparel", "Face_Neck", "Hair", "Left_Foot", "Left_Hand", "Left_Lower_Arm",
    "Left_Lower_Leg", "Left_Shoe", "Left_Sock", "Left_Upper_Arm", "Left_Upper_Leg",
    "Lower_Clothing", "Right_Foot", "Right_Hand", "Right_Lower_Arm", "Right_Lower_Leg",
    "Right_Shoe", "Right_Sock", "Right_Upper_Arm", "Right_Upper_Leg", "Torso", "Upper_Clothing",
    "Lower_Lip", "Upper_Lip", "Lower_Teeth", "Upper_Teeth", "Tongue",
)
# fmt: on


def test_seg_classes() -> None:
    assert GOLIATH_SEG_28.num_classes == 28
    assert GOLIATH_SEG_28.names == SEG_28


@pytest.mark.parametrize(
    ("label", "rgb"),
    [
        (0, (50, 50, 50)),
        (1, (255, 218, 0)),
        (2, (128, 200, 255)),
        (3, (255, 0, 109)),
        (27, (82, 21, 114)),
    ],
)
def test_seg_palette(label: int, rgb: tuple[int, int, int]) -> None:
    assert GOLIATH_SEG_28.palette[label] == rgb


def test_seg_matches_official_fingerprint() -> None:
    # Digest of (class names, palette) from lite/demo/classes_and_palettes.py at commit 3e829ac.
    got = _digest(GOLIATH_SEG_28.names, GOLIATH_SEG_28.palette)
    assert got == "4e80e4f291fe8058d62566ca21dffc199260e14e96d065bc25a492c643fb1415"


def test_seg_flip() -> None:
    seg = GOLIATH_SEG_28
    assert seg.flip_pairs == (
        (4, 13),
        (5, 14),
        (6, 15),
        (7, 16),
        (8, 17),
        (9, 18),
        (10, 19),
        (11, 20),
    )
    flip = seg.flip_indices
    assert all(flip[flip[i]] == i for i in range(seg.num_classes))
    for i, j in enumerate(flip):
        if i == j:
            assert not seg.names[i].startswith(("Left_", "Right_"))
        else:
            assert seg.names[j] == seg.names[i].replace("Left_", "@").replace(
                "Right_", "Left_"
            ).replace("@", "Right_")


_SEG_OK: dict[str, Any] = {
    "name": "toy",
    "names": ("bg", "Left_Hand", "Right_Hand"),
    "palette": ((0, 0, 0), (1, 1, 1), (2, 2, 2)),
    "flip_pairs": ((1, 2),),
}


@pytest.mark.parametrize(
    ("changes", "expectation"),
    [
        ({}, does_not_raise()),
        ({"names": ()}, _raises("expected at least one class name, got none")),
        ({"names": ("bg", "a", "a")}, _raises(r"got duplicates \['a'\]")),
        ({"palette": ((0, 0, 0),)}, _raises("palette: expected 3 colors, got 1")),
        ({"palette": ((0, 0, 0), (1, 1), (2, 2, 2))}, _raises(r"palette\[1\]: expected 3 ints")),
        ({"flip_pairs": ((1, 3),)}, _raises(r"labels in \[0, 3\), got \(1, 3\)")),
        ({"flip_pairs": ((1, 1),)}, _raises(r"flip_pairs\[0\]: expected two distinct labels")),
        ({"flip_pairs": ((1, 2), (2, 0))}, _raises(r"one pair at most, got \[2\] again")),
    ],
)
def test_seg_class_set_validation(
    changes: dict[str, Any], expectation: AbstractContextManager[Any]
) -> None:
    with expectation:
        SegClassSet(**{**_SEG_OK, **changes})
