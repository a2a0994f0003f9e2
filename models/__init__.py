"""Pure-PyTorch Sapiens: backbones, heads, checkpoint loading, pre- and post-processing.

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
from models.checkpoint import convert_official, infer_size, load_checkpoint
from models.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ModelError,
    UnsafeCheckpointError,
)
from models.heads import DenseHead, build_head
from models.hub import HubRef, hub_ref, parse_hub_name
from models.sapiens import CheckpointInfo, SapiensModel, build_model
from models.spec import ARCHES, INPUT_SIZE, SIZES, TASKS, BackboneSpec, HeadSpec
from models.weights_policy import WeightsPolicy

__all__ = [
    "ARCHES",
    "INPUT_SIZE",
    "SIZES",
    "TASKS",
    "BackboneSpec",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "DenseHead",
    "HeadSpec",
    "HubRef",
    "ModelError",
    "SapiensModel",
    "SapiensViT",
    "UnsafeCheckpointError",
    "WeightsPolicy",
    "build_backbone",
    "build_head",
    "build_model",
    "convert_official",
    "hub_ref",
    "infer_size",
    "load_checkpoint",
    "parse_hub_name",
    "sapiens_0_3b",
    "sapiens_0_6b",
    "sapiens_1b",
    "sapiens_2b",
    "sapiens_tiny",
]
