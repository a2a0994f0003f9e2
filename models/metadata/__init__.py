"""Data about what the Sapiens heads predict (keypoint sets, segmentation classes) and the
licences of the released weights.

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
from models.metadata.licences import LICENCES, Licence, licence
from models.metadata.segmentation import GOLIATH_SEG_28, SAPIENS2_SEG_29, SegClassSet, seg_classes

__all__ = [
    "COCO_17",
    "COCO_WHOLEBODY_133",
    "GOLIATH_308",
    "GOLIATH_SEG_28",
    "KEYPOINT_SETS",
    "LICENCES",
    "SAPIENS2_SEG_29",
    "KeypointSet",
    "Licence",
    "SegClassSet",
    "flip_indices_from_swaps",
    "keypoint_set",
    "licence",
    "seg_classes",
]
