"""A self-contained demo of the model stack on real video frames.

Decode frames upright (``media``), crop persons (Sapiens' top-down crop, at the model's input:
1024x768 for released models, 256x192 for the tiny one as in the pipeline), run the backbone
groups of the four tasks, decode the outputs into frame coordinates and save one picture per
frame: [frame + skeleton | body parts | depth | normals].

``--model tiny`` has random weights: the pictures show the plumbing, not a prediction, and say
so (a banner on every picture, ``random_weights`` and a ``note`` in the output). A released
size (``--model 0.3b`` ...) loads the released checkpoint of each task, from the hub (its
cache first; ``HF_HUB_OFFLINE=1`` uses the cache only) or from ``--weights DIR``; weights that
cannot be found fail the demo with one line, never a silent fallback to random weights.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from actors.groups import TINY_TASKS, ModelSpec, build_groups, model_facts
from flows.errors import SpecError
from flows.visualize import (
    RANDOM_WEIGHTS_BANNER,
    banner,
    colorize_depth,
    colorize_normals,
    colorize_parts,
    draw_pose,
    panel,
)
from media import read_frames
from models.composite import crop_maps_to_frame
from models.metadata import keypoint_set
from models.postprocess import heatmap_to_crop, normalize_normals, udp_decode
from models.preprocess import crop_persons, normalize, points_crop_to_image

__all__ = ["DemoResult", "decode_frames", "run_demo"]

logger = logging.getLogger(__name__)
TASKS = TINY_TASKS  # the four heads of Sapiens v1


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What the demo produced."""

    input: str
    frames: int
    persons: int
    images: tuple[str, ...]
    random_weights: bool
    model: str = "tiny"
    checkpoints: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        out = {
            "input": self.input,
            "model": self.model,
            "frames": self.frames,
            "persons": self.persons,
            "images": list(self.images),
            "random_weights": self.random_weights,
            "checkpoints": self.checkpoints,
            "seconds": self.seconds,
        }
        if self.random_weights:
            out["note"] = f"{RANDOM_WEIGHTS_BANNER}: the pictures show the plumbing only"
        return json.dumps(out, indent=2)


def decode_frames(path: Path, *, count: int, stride: int) -> tuple[np.ndarray, list[int]]:
    """Every ``stride``-th frame (decode order) up to ``count`` frames: (F, H, W, 3) uint8 RGB."""
    read = list(itertools.islice(read_frames(path, stride=stride), count))
    if not read:
        raise ValueError(f"{path}: no video frames could be decoded")
    return np.stack([rgb for _, rgb in read]), [index for index, _ in read]


def _model_key(size: str, weights: str | None, seed: int) -> ModelSpec:
    """The demo's model: ``tiny`` (random weights from ``seed``) or a released size with its
    checkpoints from ``weights`` (``hub`` or a directory; default ``hub``)."""
    if size == "tiny" and weights is not None:
        raise SpecError(
            f"the tiny model has random weights; --weights {weights!r} needs a released --model"
        )
    try:
        return ModelSpec(size=size, weights=weights or "hub", seed=seed)
    except ValueError as e:
        raise SpecError(f"demo: {e}") from e


def _predict(
    frames: torch.Tensor, boxes: torch.Tensor, key: ModelSpec
) -> tuple[dict[str, torch.Tensor], object, dict[str, str]]:
    """Raw outputs of every task for the persons of every frame, the crops, and the source
    of each checkpointed part."""
    groups = build_groups(key, TASKS, 2)
    frame_index = torch.arange(frames.shape[0]).repeat_interleave(boxes.shape[0])
    all_boxes = boxes.repeat(frames.shape[0], 1)
    crop = crop_persons(frames, frame_index, all_boxes, key.resolved_crop_size)
    images = normalize(crop.crops)
    outputs = {k: v.float().cpu() for g in groups for k, v in g(images).items()}
    facts = model_facts(key, groups, TASKS)["checkpoints"]
    return outputs, crop, {part: str(info.get("source")) for part, info in facts.items()}


def _decode(
    out: dict[str, torch.Tensor], crop: Any, hw: tuple[int, int], crop_size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Per-person keypoints and scores, part labels, depth and unit normals in frame pixels."""
    kp_hm, scores = udp_decode(out["pose"])
    in_crop = heatmap_to_crop(kp_hm, tuple(out["pose"].shape[-2:]), crop_size)
    kps = points_crop_to_image(in_crop, crop.center, crop.scale, crop_size)
    seg, covered = crop_maps_to_frame(out["seg"], crop.matrix, hw)
    depth, _ = crop_maps_to_frame(out["depth"], crop.matrix, hw)
    normal, _ = crop_maps_to_frame(out["normal"], crop.matrix, hw)
    return {
        "keypoints": kps.numpy(),
        "scores": scores.numpy(),
        "labels": torch.where(covered[:, 0], seg.argmax(1), 0).numpy(),
        "depth": depth[:, 0].numpy(),
        "normals": normalize_normals(normal).permute(0, 2, 3, 1).numpy(),
    }


def _pictures(
    rgb: np.ndarray, indices: list[int], per_frame: int, d: dict[str, np.ndarray], *, random: bool
) -> list[tuple[int, np.ndarray]]:
    """(frame index, panel) per frame; random weights: the banner across the top."""
    kset = keypoint_set(d["keypoints"].shape[1])
    out = []
    for f, index in enumerate(indices):
        rows = slice(f * per_frame, (f + 1) * per_frame)  # the same boxes on every frame
        lab = d["labels"][rows].max(0)
        fg = lab > 0
        tiles = [
            draw_pose(
                rgb[f],
                d["keypoints"][rows],
                d["scores"][rows],
                kset,
                threshold=0.0 if random else 0.3,
            ),
            colorize_parts(lab, alpha_on=rgb[f]),
            colorize_depth(d["depth"][rows].mean(0), fg),
            colorize_normals(d["normals"][rows].mean(0), fg),
        ]
        picture = panel(tiles)
        out.append((index, banner(picture, RANDOM_WEIGHTS_BANNER) if random else picture))
    return out


def _save(pictures: list[tuple[int, np.ndarray]], out_dir: Path) -> list[str]:
    """Write ``frame_<index>.png`` per picture; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, picture in pictures:
        path = out_dir / f"frame_{index:06d}.png"
        Image.fromarray(picture).save(path)
        paths.append(str(path))
    return paths


def run_demo(
    input_path: Path,
    out_dir: Path,
    *,
    count: int = 3,
    stride: int = 50,
    size: str = "tiny",
    weights: str | None = None,
    boxes: list[list[float]] | None = None,
    seed: int = 0,
) -> DemoResult:
    """Run the demo and write ``frame_<index>.png`` files plus ``summary.json`` to ``out_dir``.

    Args:
        size: ``tiny`` (random weights) or a released Sapiens size.
        weights: ``hub`` or a directory of the released files (released sizes only; default
            ``hub``).

    Raises:
        SpecError: weights given for ``tiny``.
        CheckpointNotFoundError: a released checkpoint is neither in ``weights`` nor on the
            hub (nor in its cache).
    """
    key = _model_key(size, weights, seed)
    random = key.size == "tiny"
    t0 = time.perf_counter()
    rgb, indices = decode_frames(input_path, count=count, stride=stride)
    h, w = rgb.shape[1:3]
    box = torch.tensor(boxes if boxes else [[0.0, 0.0, float(w), float(h)]], dtype=torch.float32)
    t1 = time.perf_counter()
    out, crop, checkpoints = _predict(torch.from_numpy(rgb).permute(0, 3, 1, 2), box, key)
    t2 = time.perf_counter()
    decoded = _decode(out, crop, (h, w), key.resolved_crop_size)
    images = _save(_pictures(rgb, indices, box.shape[0], decoded, random=random), out_dir)
    result = DemoResult(
        input=str(input_path),
        frames=len(indices),
        persons=box.shape[0] * len(indices),
        images=tuple(images),
        random_weights=random,
        model=key.name,
        checkpoints=checkpoints,
        seconds={"decode": t1 - t0, "infer": t2 - t1, "post": time.perf_counter() - t2},
    )
    (out_dir / "summary.json").write_text(result.to_json() + "\n")
    return result
