"""Loading kornia's COCO RT-DETR with its weights: local file, Hugging Face hub file, torch hub
cache or download.

The published checkpoints (``URLs`` in ``kornia.models.rt_detr.model``) keep the reference
implementation's parameter names inside ``{"ema": {"module": state_dict}}``; kornia's modules
name two things differently (see :func:`to_kornia_names`). Files are read with
``torch.load(weights_only=True)`` and loaded strictly.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from kornia.core import download as kornia_download
from kornia.models.rt_detr.model import RTDETR, URLs
from torch import nn

from .errors import CheckpointError, CheckpointNotFoundError
from .hub import HubRef, download

__all__ = ["COCO_CLASSES", "MODEL_NAMES", "DetectorWeightsUnavailableError", "load_rtdetr"]

logger = logging.getLogger(__name__)

COCO_CLASSES = 80
HUB_SCHEME = "hf://"
MODEL_NAMES: tuple[str, ...] = tuple(sorted(URLs))


class DetectorWeightsUnavailableError(CheckpointNotFoundError):
    """Detector weights are neither on disk nor downloadable (e.g. offline with a cold cache)."""


def load_rtdetr(
    model_name: str, weights: str | os.PathLike[str] | None, *, pretrained: bool, timeout: float
) -> nn.Module:
    """Build kornia's RT-DETR ``model_name`` (80 COCO classes) and load its weights.

    Args:
        model_name: One of :data:`MODEL_NAMES` (checked by the caller).
        weights: Local checkpoint file, or ``hf://owner/repo/file`` for a file of a Hugging
            Face hub repository (fetched into, or found in, the hub cache); when given,
            kornia's download is not used.
        pretrained: Without ``weights``: fetch the published weights through kornia's
            downloader (torch hub cache) when True, keep random weights when False.
        timeout: Seconds one network wait may stall (kornia retries transient failures).

    Returns:
        The model in eval mode, on the CPU, float32.

    Raises:
        DetectorWeightsUnavailableError: The file is missing, or the download failed.
        CheckpointError: The file cannot be read or does not fit the model.
    """
    urls = list(URLs[model_name])
    if weights is not None:
        source = str(weights)
        path = _hub_file(source) if source.startswith(HUB_SCHEME) else Path(weights)
        state = _read_weights(path, urls)
    elif pretrained:
        source = urls[0]
        state = _download_weights(model_name, urls, timeout)
    else:
        logger.warning("RT-DETR %s has random weights: its detections are meaningless", model_name)
        return RTDETR.from_name(model_name, num_classes=COCO_CLASSES).eval()
    model = RTDETR.from_name(model_name, num_classes=COCO_CLASSES)
    _load_strict(model, to_kornia_names(state, source), source)
    logger.info("loaded RT-DETR %s weights from %s", model_name, source)
    return model.eval()


def _needed(urls: list[str]) -> str:
    """The 'what file, from where' part of a missing-weights message."""
    name = Path(urlparse(urls[0]).path).name
    return f"the file {name} (from {' or '.join(urls)})"


def _hub_file(name: str) -> Path:
    """The local copy of ``hf://owner/repo/path/file`` (``models.hub.download``: the hub
    cache first; offline, the cache only)."""
    parts = name[len(HUB_SCHEME) :].split("/")
    if len(parts) < 3 or not all(parts):
        msg = f"RT-DETR weights {name!r}: expected {HUB_SCHEME}owner/repo/file"
        raise DetectorWeightsUnavailableError(msg)
    ref = HubRef(
        repo_id="/".join(parts[:2]),
        filenames=("/".join(parts[2:]),),
        task="person detection",
        size="",
        fmt="original",
    )
    try:
        return download(ref)
    except CheckpointNotFoundError as e:
        raise DetectorWeightsUnavailableError(f"RT-DETR weights: {e}") from e


def _read_weights(path: Path, urls: list[str]) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` a local checkpoint, with actionable errors."""
    if not path.is_file():
        msg = (
            f"RT-DETR weights file {path} does not exist: expected {_needed(urls)}; "
            f"download it and pass its path as weights="
        )
        raise DetectorWeightsUnavailableError(msg)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        msg = f"cannot read RT-DETR weights {path} with torch.load(weights_only=True): {e}"
        raise CheckpointError(msg) from e
    if not isinstance(state, dict):
        msg = f"RT-DETR weights {path}: expected a dict (state dict), got {type(state).__name__}"
        raise CheckpointError(msg)
    return state


def _download_weights(model_name: str, urls: list[str], timeout: float) -> dict[str, Any]:
    """Fetch the published weights through kornia's downloader (torch hub cache)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(urls[0]).path).name
    try:
        state = kornia_download.load_state_dict_from_url(urls, map_location="cpu", timeout=timeout)
    except RuntimeError as e:
        msg = (
            f"RT-DETR weights for {model_name!r} are not in the torch hub cache and could not be "
            f"downloaded: {e}. Needed: {_needed(urls)}. Either put that file at {cache} (the "
            f"torch hub cache; TORCH_HOME moves it) or pass its local path as weights= "
            f"(RTDETRDetector(weights=...), build_detector('rtdetr', weights=...))."
        )
        raise DetectorWeightsUnavailableError(msg) from e
    return state


# Reference RT-DETR parameter names -> kornia's: the encoder's CCFM blocks sit one level deeper
# and the ResNet-D bottleneck branches live in a ``convs`` submodule.
_CCFM_BLOCKS = ("lateral_convs", "fpn_blocks", "downsample_convs", "pan_blocks")
_BRANCHES = ("branch2a", "branch2b", "branch2c")


def to_kornia_names(state: dict[str, Any], source: str) -> dict[str, Any]:
    """Unwrap and rename a reference checkpoint; a kornia-named state dict passes unchanged.

    Args:
        state: A loaded checkpoint: ``{"ema": {"module": ...}}`` or a plain state dict.
        source: Where it came from, for messages.

    Returns:
        A state dict with kornia's parameter names.

    Raises:
        CheckpointError: ``ema`` holds no ``module`` state dict.
    """
    if "ema" not in state:
        return state
    module = state["ema"].get("module") if isinstance(state["ema"], dict) else None
    if not isinstance(module, dict):
        msg = f"RT-DETR weights {source}: expected ['ema']['module'] to be a state dict"
        raise CheckpointError(msg)
    renamed: dict[str, Any] = {}
    for key, value in module.items():
        new = key
        for block in _CCFM_BLOCKS:
            new = new.replace(f"encoder.{block}", f"encoder.ccfm.{block}")
        for branch in _BRANCHES:
            new = new.replace(f".{branch}.", f".convs.{branch}.")
        renamed[new] = value
    return renamed


def _load_strict(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``load_state_dict`` that raises :class:`CheckpointError` listing up to 10 bad keys."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even with strict=False
        msg = f"RT-DETR weights {source} do not fit the model: {e}"
        raise CheckpointError(msg) from e
    if result.missing_keys or result.unexpected_keys:
        msg = (
            f"RT-DETR weights {source} do not fit the model (converter: reference->kornia "
            f"names): {len(result.missing_keys)} missing, e.g. {result.missing_keys[:10]}; "
            f"{len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:10]}"
        )
        raise CheckpointError(msg)
