"""Frames and person boxes in, frame-coordinate results out: the model math of one batch.

Frames travel to the device once; crops are cut there (kornia), every backbone group runs once
per crop, and the raw outputs are decoded there: pose keypoints back to frame pixels, dense
outputs reduced to per-person patches in the stored dtypes (``models.patches``; frame maps are
composed from them on read). Whole-frame dense mode gives frame maps on the output grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from models._frame_maps import frames_to_input, whole_frame_maps
from models._frame_maps2 import sapiens2_frame_outputs
from models._persons import FrameMaps
from models.batching import output_task
from models.patches import PersonPatches, person_patches
from models.postprocess import flip_test_average, heatmap_to_crop, udp_decode
from models.preprocess import (
    CONFIG_NORM,
    CropResult,
    Normalization,
    boxes_to_center_scale,
    crop_persons,
    normalize,
    points_crop_to_image,
)
from models.runtime import Predictor
from models.spec import INPUT_SIZE
from models.transfer import to_device

__all__ = [
    "DENSE_MODES",
    "DERIVED_TASKS",
    "Analyzer",
    "DenseMode",
    "PersonResults",
    "decode_outputs",
    "depth_from_pointmap",
]

DENSE_TASKS = ("seg", "depth", "normal", "pointmap")
#: Tasks served from another head's output when no head of their own exists: Sapiens2 has no
#: depth head, and its depth is the metric z of the pointmap (the pointmap / the model's scale).
DERIVED_TASKS: dict[str, str] = {"depth": "pointmap"}
DenseMode = Literal["crop", "frame"]
"""``crop``: dense tasks on the person crops; ``frame``: on the whole frame (official demos)."""
DENSE_MODES: tuple[DenseMode, ...] = get_args(DenseMode)


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonResults:
    """Results of one batch, on the CPU.

    Attributes:
        keypoints: (N, K, 2) float32 frame pixels, or None without pose.
        keypoint_scores: (N, K) float32, or None.
        maps: per-frame dense maps (whole-frame mode), or None.
        patches: per-person dense patches (crop mode), or None.
    """

    keypoints: Tensor | None
    keypoint_scores: Tensor | None
    maps: FrameMaps | None = None
    patches: PersonPatches | None = None


class Analyzer:
    """Runs backbone groups over person crops and decodes their outputs.

    Args:
        groups: predictors, each running one backbone group (one backbone, its heads).
            Official checkpoints give one group per task; the tiny model one for all.
        norm: normalisation constants.
        crop_size: (H, W) of the crops.
        flip_indices: keypoint swap map; when given, pose runs the flip test (the crop and its
            mirror image, heatmaps averaged).
        dense_mode: ``crop``: seg/depth/normal run on the person crops and are composited
            (``models._persons``); ``frame``: they run on the whole frame resized to the input
            size, as the official demos do (``models._frame_maps``). Pose always uses crops.
            The default of calls, which may choose otherwise.


    One analyzer serves callers with different needs: each call names its tasks (a subset of
    the groups' tasks) and dense mode, and only the heads it names run for its crops. A task
    in ``DERIVED_TASKS`` whose source head is loaded and its own is not is served from the
    source's output (Sapiens2's ``depth`` from its ``pointmap``).
    """

    def __init__(
        self,
        groups: Sequence[Predictor],
        *,
        norm: Normalization = CONFIG_NORM,
        crop_size: tuple[int, int] = INPUT_SIZE,
        flip_indices: Sequence[int] | None = None,
        dense_mode: str = "crop",
    ) -> None:
        _check_dense_mode(dense_mode)
        if not groups:
            raise ValueError("expected at least one backbone group, got none")
        tasks = [t for g in groups for t in g.model.tasks]
        if len(tasks) != len(set(tasks)):
            raise ValueError(f"each task must belong to exactly one group, got {tasks}")
        self.groups = tuple(groups)
        self._derived = {
            t: src for t, src in DERIVED_TASKS.items() if src in tasks and t not in tasks
        }
        self.tasks = (*tasks, *self._derived)
        self.norm, self.crop_size, self.dense_mode = norm, crop_size, dense_mode
        # Sapiens2 pre-processing: crops that enlarge their box are bicubic (cv2's
        # INTER_CUBIC), the others bilinear; whole frames follow its demos (_frame_maps2).
        self.family = str(getattr(groups[0].model, "family", "sapiens"))
        self.enlarge_mode = "bicubic" if self.family == "sapiens2" else "bilinear"
        self.device = groups[0].device
        self.flip = None if flip_indices is None else torch.tensor(flip_indices, device=self.device)

    def run_groups(self, crops: Tensor, want: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Raw outputs (with the flip test) for normalised crops, of the heads in ``want``
        (default: all); a group none of whose heads is wanted does not run."""
        outputs: dict[str, Tensor] = {}
        wanted = None if want is None else frozenset(self._derived.get(t, t) for t in want)
        for group in self.groups:
            tasks = group.model.tasks
            if wanted is not None:
                tasks = tuple(t for t in tasks if t in wanted)
                if not tasks:
                    continue
            out = group(crops, tasks)
            if self.flip is not None and "pose" in out:
                mirrored = group(crops.flip(-1), ("pose",))["pose"]
                out["pose"] = flip_test_average(out["pose"], mirrored, self.flip)
            outputs.update(out)
        for task, src in self._derived.items():
            if (want is None or task in want) and src in outputs:
                outputs[task] = depth_from_pointmap(outputs[src], outputs[f"{src}_scale"])
        if want is not None:
            outputs = {k: v for k, v in outputs.items() if output_task(k) in want}
        return outputs

    @torch.inference_mode()
    def __call__(
        self,
        frames: Tensor,
        frame_index: Tensor,
        boxes: Tensor,
        scores: Tensor,
        *,
        out_size: tuple[int, int] | None = None,
        forward: Forward | None = None,
        tasks: Sequence[str] | None = None,
        dense_mode: str | None = None,
    ) -> PersonResults:
        """Analyse N persons of F frames.

        Args:
            frames: (F, 3, H, W) uint8 RGB, any device.
            frame_index: (N,) frame of each person.
            boxes: (N, 4) xyxy boxes in frame pixels.
            scores: (N,) detection scores (break ownership ties).
            out_size: (H', W') of the dense maps; default (H, W).
            forward: ``forward(images, tasks)`` runs :meth:`run_groups` for those tasks on
                normalised images (e.g. through a ``DynamicBatcher`` session shared with other
                callers); default: directly.
            tasks: the tasks to produce (default: every task of the groups).
            dense_mode: ``crop`` or ``frame`` (default: the analyzer's).
        """
        tasks = self.tasks if tasks is None else self.check_tasks(tasks)
        mode = self.dense_mode if dense_mode is None else _check_dense_mode(dense_mode)
        frames = to_device(frames, self.device)
        run = forward or (lambda images, want: self.run_groups(images, frozenset(want)))
        if mode == "frame":
            return self._whole_frame(frames, frame_index, boxes, scores, out_size, run, tasks)
        crop = self.crop(frames, frame_index, boxes)
        outputs = run(normalize(crop.crops, self.norm), frozenset(tasks)) if len(boxes) else {}
        return decode_outputs(
            outputs,
            center=crop.center,
            scale=crop.scale,
            matrix=crop.matrix,
            boxes=boxes,
            frame_size=(frames.shape[-2], frames.shape[-1]),
            crop_size=self.crop_size,
            tasks=tasks,
            num_keypoints=self._num_keypoints(),
        )

    def check_tasks(self, tasks: Sequence[str]) -> tuple[str, ...]:
        """``tasks`` in the groups' order; an error names any task no group has."""
        missing = [t for t in tasks if t not in self.tasks]
        if missing or not tasks:
            raise ValueError(
                f"tasks {list(tasks)} are not a non-empty subset of {list(self.tasks)}"
            )
        return tuple(t for t in self.tasks if t in tasks)

    def _whole_frame(
        self,
        frames: Tensor,
        frame_index: Tensor,
        boxes: Tensor,
        scores: Tensor,
        out_size: tuple[int, int] | None,
        run: Forward,
        tasks: Sequence[str],
    ) -> PersonResults:
        """Pose on the person crops, dense tasks on the whole frames: each kind of image goes
        only to the heads that need it (``run(crops, {pose})``, ``run(frames, dense)``), so a
        released checkpoint's pose group never sees a frame, nor a dense group a crop."""
        n_frames, frame_size = frames.shape[0], (frames.shape[-2], frames.shape[-1])
        dense = tuple(t for t in DENSE_TASKS if t in tasks)
        crop = self.crop(frames, frame_index, boxes)
        n_crops = len(boxes) if "pose" in tasks else 0
        pose_raw = run(normalize(crop.crops, self.norm), frozenset({"pose"})) if n_crops else {}
        pose = decode_outputs(
            {"pose": pose_raw["pose"]} if n_crops else {},
            center=crop.center,
            scale=crop.scale,
            matrix=crop.matrix,
            boxes=boxes,
            frame_size=frame_size,
            crop_size=self.crop_size,
            tasks=("pose",) if "pose" in tasks else (),
            num_keypoints=self._num_keypoints(),
        )
        maps = None
        if dense:
            out_size = out_size or frame_size
            if self.family == "sapiens2":
                raw = sapiens2_frame_outputs(
                    frames,
                    run,
                    lambda images: normalize(images, self.norm),
                    input_size=self.crop_size,
                    tasks=dense,
                    out_size=out_size,
                )
            else:
                images = normalize(frames_to_input(frames, self.crop_size), self.norm)
                raw = run(images, frozenset(dense))
            maps = whole_frame_maps(
                {t: raw[t] for t in dense},
                boxes=boxes.to(self.device),
                scores=scores.cpu(),
                frame_index=frame_index.to(self.device),
                n_frames=n_frames,
                frame_size=frame_size,
                out_size=out_size,
                tasks=dense,
                on_grid=self.family == "sapiens2",
            ).cpu()
        return PersonResults(
            keypoints=pose.keypoints, keypoint_scores=pose.keypoint_scores, maps=maps
        )

    def crop(self, frames: Tensor, frame_index: Tensor, boxes: Tensor) -> CropResult:
        """Person crops (on the analyzer's device) and their geometry; the boxes stay where
        they are (the host) for the geometry, so cropping does not wait on the device."""
        return crop_persons(
            frames.to(self.device),
            frame_index,
            boxes,
            self.crop_size,
            enlarge_mode=self.enlarge_mode,
        )

    def _num_keypoints(self) -> int:
        for group in self.groups:
            if "pose" in group.model.heads:
                return int(group.model.heads["pose"].spec.out_dim)
        return 0


def depth_from_pointmap(pointmap: Tensor, scale: Tensor) -> Tensor:
    """(N, 1, H, W) float32 metric depth: the z of (N, 3, H, W) pointmaps divided by their
    (N, 1) scales (Sapiens2: the pointmap is canonical camera space scaled by the scale)."""
    return pointmap[:, 2:3].float() / scale.float().view(-1, 1, 1, 1)


Forward = Callable[[Tensor, frozenset[str]], dict[str, Tensor]]
"""Normalised images and the tasks they are for -> raw outputs of those tasks' heads."""


def _check_dense_mode(mode: str) -> str:
    if mode not in DENSE_MODES:
        raise ValueError(f"dense_mode must be 'crop' or 'frame', got {mode!r}")
    return mode


def decode_outputs(
    outputs: Mapping[str, Tensor],
    *,
    center: Tensor,
    scale: Tensor,
    matrix: Tensor,
    boxes: Tensor,
    frame_size: tuple[int, int],
    crop_size: tuple[int, int],
    tasks: Sequence[str],
    num_keypoints: int,
) -> PersonResults:
    """Raw head outputs of N crops -> keypoints in frame pixels and per-person patches.

    Args:
        outputs: ``{task: (N, C, h, w)}`` raw head outputs.
        center, scale, matrix: the crops' geometry (``preprocess.CropResult``).
        boxes: the persons' boxes, (N, 4) xyxy frame pixels.
        frame_size: (H, W) of the frames.
        crop_size: (Hc, Wc) of the crops.
        tasks: tasks to produce results for (patches exist even with no persons).
        num_keypoints: K of the pose head.
    """
    keypoints = kp_scores = None
    n = len(boxes)
    if "pose" in tasks:
        heatmaps = outputs.get("pose")
        if heatmaps is None or n == 0:
            keypoints, kp_scores = torch.zeros(0, num_keypoints, 2), torch.zeros(0, num_keypoints)
        else:
            kp_hm, kp_scores = udp_decode(heatmaps)
            in_crop = heatmap_to_crop(kp_hm, (heatmaps.shape[-2], heatmaps.shape[-1]), crop_size)
            keypoints = points_crop_to_image(in_crop, center, scale, crop_size).float().cpu()
            kp_scores = kp_scores.float().cpu()
    patches = None
    dense = tuple(t for t in DENSE_TASKS if t in tasks)
    if dense:
        host_boxes = boxes.detach().cpu()  # the caller's own copy: boxes arrive from the host
        patches = person_patches(
            outputs,
            boxes=host_boxes.numpy(),
            crop_scale=boxes_to_center_scale(host_boxes)[1].numpy(),
            matrix=matrix,
            frame_size=frame_size,
            crop_size=crop_size,
            tasks=dense,
        )
    return PersonResults(keypoints=keypoints, keypoint_scores=kp_scores, patches=patches)
