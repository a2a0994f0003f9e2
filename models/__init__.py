"""Pure-PyTorch Sapiens and Sapiens2: backbones, heads, checkpoint loading, pre- and
post-processing.

Nothing here imports Ray, Redis or Zarr.
"""

from __future__ import annotations

from models.backbone import (
    SapiensViT,
    build_backbone,
    sapiens_0_3b,
    sapiens_0_6b,
    sapiens_1b,
    sapiens_2b,
    sapiens_tiny,
)
from models.backbone2 import (
    Sapiens2ViT,
    build_backbone2,
    sapiens2_0_1b,
    sapiens2_0_4b,
    sapiens2_0_8b,
    sapiens2_1b,
    sapiens2_1b_4k,
    sapiens2_5b,
    sapiens2_tiny,
    sapiens2_tiny_4k,
)
from models.checkpoint import (
    convert_official,
    detect_family,
    infer_size,
    load_checkpoint,
    sapiens2_official_state_dict,
)
from models.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ModelError,
    UnsafeCheckpointError,
)
from models.heads import DenseHead, PointmapHead, ShuffleHead, build_head
from models.hub import HubRef, hub_ref, parse_hub_name
from models.metadata import LICENCES, SAPIENS2_SEG_29, Licence, licence, seg_classes
from models.sapiens import CheckpointInfo, SapiensModel, build_model
from models.spec import ARCHES, FAMILIES, INPUT_SIZE, SIZES, TASKS, BackboneSpec, HeadSpec
from models.spec2 import SAPIENS2_ARCHES, SAPIENS2_SIZES, SAPIENS2_TASKS, Sapiens2Spec
from models.weights_policy import WeightsPolicy

__all__ = [
    "ARCHES",
    "FAMILIES",
    "INPUT_SIZE",
    "LICENCES",
    "SAPIENS2_ARCHES",
    "SAPIENS2_SEG_29",
    "SAPIENS2_SIZES",
    "SAPIENS2_TASKS",
    "SIZES",
    "TASKS",
    "BackboneSpec",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "DenseHead",
    "HeadSpec",
    "HubRef",
    "Licence",
    "ModelError",
    "PointmapHead",
    "Sapiens2Spec",
    "Sapiens2ViT",
    "SapiensModel",
    "SapiensViT",
    "ShuffleHead",
    "UnsafeCheckpointError",
    "WeightsPolicy",
    "build_backbone",
    "build_backbone2",
    "build_head",
    "build_model",
    "convert_official",
    "detect_family",
    "hub_ref",
    "infer_size",
    "licence",
    "load_checkpoint",
    "parse_hub_name",
    "sapiens2_0_1b",
    "sapiens2_0_4b",
    "sapiens2_0_8b",
    "sapiens2_1b",
    "sapiens2_1b_4k",
    "sapiens2_5b",
    "sapiens2_official_state_dict",
    "sapiens2_tiny",
    "sapiens2_tiny_4k",
    "sapiens_0_3b",
    "sapiens_0_6b",
    "sapiens_1b",
    "sapiens_2b",
    "sapiens_tiny",
    "seg_classes",
]
