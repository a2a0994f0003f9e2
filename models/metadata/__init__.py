"""Data about what the Sapiens heads predict: keypoint sets and segmentation classes.

Pure Python (no torch). The facts (names, order, flip partners, skeleton links, colors) come
from the official repository ``facebookresearch/sapiens``; each module names the files it
draws on.
"""

from __future__ import annotations

from models.metadata.keypoints import (
    COCO_17,
    COCO_WHOLEBODY_133,
    GOLIATH_308,
    KEYPOINT_SETS,
    KeypointSet,
    flip_indices_from_swaps,
    keypoint_set,
)
from models.metadata.segmentation import GOLIATH_SEG_28, SegClassSet

__all__ = [
    "COCO_17",
    "COCO_WHOLEBODY_133",
    "GOLIATH_308",
    "GOLIATH_SEG_28",
    "KEYPOINT_SETS",
    "KeypointSet",
    "SegClassSet",
    "flip_indices_from_swaps",
    "keypoint_set",
]
