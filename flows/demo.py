"""A self-contained demo of the model stack on real video frames.

Decode frames upright (``media``), crop persons (Sapiens' top-down crop), run one backbone group
with all four heads, decode the outputs into frame coordinates and save one picture per frame:
[frame + skeleton | body parts | depth | normals]. With ``--model tiny`` the weights are random,
so the pictures show the plumbing, not a prediction; pass a checkpoint for real results.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flows.spec import TASK_NAMES
from flows.visualize import colorize_depth, colorize_normals, colorize_parts, draw_pose, panel
from media import read_frames
from models import build_model
from models.composite import crop_maps_to_frame
from models.metadata import keypoint_set
from models.postprocess import heatmap_to_crop, normalize_normals, udp_decode
from models.preprocess import crop_persons, normalize, points_crop_to_image
from models.runtime import Predictor, RuntimeSpec

__all__ = ["DemoResult", "decode_frames", "run_demo"]

logger = logging.getLogger(__name__)
TASKS = TASK_NAMES


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoResult:
    """What the demo produced."""

    input: str
    frames: int
    persons: int
    images: tuple[str, ...]
    random_weights: bool
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "input": self.input,
                "frames": self.frames,
                "persons": self.persons,
                "images": list(self.images),
                "random_weights": self.random_weights,
                "seconds": self.seconds,
            },
            indent=2,
        )


def decode_frames(path: Path, *, count: int, stride: int) -> tuple[np.ndarray, list[int]]:
    """Every ``stride``-th frame (decode order) up to ``count`` frames: (F, H, W, 3) uint8 RGB."""
    read = list(itertools.islice(read_frames(path, stride=stride), count))
    if not read:
        raise ValueError(f"{path}: no video frames could be decoded")
    return np.stack([rgb for _, rgb in read]), [index for index, _ in read]


def _predict(
    frames: torch.Tensor, boxes: torch.Tensor, size: str, seed: int
) -> tuple[dict[str, torch.Tensor], object]:
    torch.manual_seed(seed)
    model = build_model(TASKS, size)
    frame_index = torch.arange(frames.shape[0]).repeat_interleave(boxes.shape[0])
    all_boxes = boxes.repeat(frames.shape[0], 1)
    crop = crop_persons(frames, frame_index, all_boxes)
    outputs = Predictor(model, RuntimeSpec(batch_size=2))(normalize(crop.crops))
    return outputs, crop


def run_demo(
    input_path: Path,
    out_dir: Path,
    *,
    count: int = 3,
    stride: int = 50,
    size: str = "tiny",
    boxes: list[list[float]] | None = None,
    seed: int = 0,
) -> DemoResult:
    """Run the demo and write ``frame_<index>.png`` files plus ``summary.json`` to ``out_dir``."""
    t0 = time.perf_counter()
    rgb, indices = decode_frames(input_path, count=count, stride=stride)
    h, w = rgb.shape[1:3]
    box = torch.tensor(boxes if boxes else [[0.0, 0.0, float(w), float(h)]], dtype=torch.float32)
    frames = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    t1 = time.perf_counter()
    out, crop = _predict(frames, box, size, seed)
    t2 = time.perf_counter()
    kp_hm, scores = udp_decode(out["pose"])
    kps = points_crop_to_image(
        heatmap_to_crop(kp_hm, tuple(out["pose"].shape[-2:])), crop.center, crop.scale
    )
    seg, covered = crop_maps_to_frame(out["seg"], crop.matrix, (h, w))
    depth, _ = crop_maps_to_frame(out["depth"], crop.matrix, (h, w))
    normal, _ = crop_maps_to_frame(out["normal"], crop.matrix, (h, w))
    labels = torch.where(covered[:, 0], seg.argmax(1), 0)
    normals = normalize_normals(normal).permute(0, 2, 3, 1).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    p, kset, images = box.shape[0], keypoint_set(out["pose"].shape[1]), []
    for f, index in enumerate(indices):
        rows = slice(f * p, (f + 1) * p)  # persons of this frame (the same boxes on each frame)
        lab, fg = labels[rows].max(0).values.numpy(), labels[rows].max(0).values.numpy() > 0
        tiles = [
            draw_pose(rgb[f], kps[rows].numpy(), scores[rows].numpy(), kset, threshold=0.0),
            colorize_parts(lab, alpha_on=rgb[f]),
            colorize_depth(depth[rows][:, 0].mean(0).numpy(), fg),
            colorize_normals(normals[rows].mean(0), fg),
        ]
        path = out_dir / f"frame_{index:06d}.png"
        Image.fromarray(panel(tiles)).save(path)
        images.append(str(path))
    result = DemoResult(
        input=str(input_path),
        frames=len(indices),
        persons=p * len(indices),
        images=tuple(images),
        random_weights=True,
        seconds={"decode": t1 - t0, "infer": t2 - t1, "post": time.perf_counter() - t2},
    )
    (out_dir / "summary.json").write_text(result.to_json() + "\n")
    return result
