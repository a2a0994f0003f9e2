"""From a ``JobSpec`` to the settings of every stage (pure: no I/O)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from actors.decode import DecodeLimits, DecodeSpec, SizeFloor
from actors.infer import InferSpec, ModelSpec
from actors.messages import VideoInfo
from actors.writer import StoreRequest
from flows.spec import JobSpec
from media import is_live, output_size
from models.analyze import DENSE_TASKS
from models.metadata import keypoint_set, seg_classes
from models.spec import output_keypoints
from storage import DEFAULT_MAX_PERSONS, ModelProvenance, StoreSpec

__all__ = [
    "LIVE_COMMIT_S",
    "MAP_BYTES_PER_PIXEL",
    "TYPICAL_FRAME",
    "JobPlan",
    "decode_floor",
    "map_bytes_per_pixel",
    "plan_job",
]

#: (H, W) a batch is sized for before its source is probed.
TYPICAL_FRAME = (1080, 1920)

#: Bytes per output pixel and frame of each task's dense map in the Sapiens actor: part labels
#: (uint8), relative depth (float32), normals and pointmaps (3 x float32); pose has none.
MAP_BYTES_PER_PIXEL = {"pose": 0, "seg": 1, "depth": 4, "normal": 12, "pointmap": 12}
#: Any dense task adds the maps that decide which person owns each pixel (a float32 score and
#: an int32 person index).
_OWNER_BYTES_PER_PIXEL = 8


#: Most seconds of a live stream's sampled frames in one store block: a block commits once it
#: is whole, so a live job's blocks are cut to this span (at most the usual 8 frames).
LIVE_COMMIT_S = 1.0
_BLOCK_FRAMES = 8


#: Bytes per source pixel of crop-mode per-person patches, for persons whose boxes together
#: cover the frame once (their upper bound without overlaps): part labels and foreground
#: (2), depth float16 (2), normals int8 (3), pointmaps 3 x float16 (6).
PATCH_BYTES_PER_PIXEL = {"pose": 0, "seg": 2, "depth": 2, "normal": 3, "pointmap": 6}


def map_bytes_per_pixel(tasks: tuple[str, ...], dense_mode: str = "frame") -> int:
    """Bytes of dense results per pixel and frame for ``tasks``: frame maps per output pixel
    (25 for all four), or per-person patches per source pixel in crop mode (7)."""
    if dense_mode == "crop":
        return sum(PATCH_BYTES_PER_PIXEL[t] for t in tasks)
    dense = sum(MAP_BYTES_PER_PIXEL[t] for t in tasks)
    return dense + _OWNER_BYTES_PER_PIXEL if dense else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPlan:
    """Resolved stage settings of one job."""

    spec: JobSpec
    decode: DecodeSpec
    infer: InferSpec
    detector: str
    detector_options: dict[str, Any] = field(default_factory=dict)

    @property
    def store_url(self) -> str:
        return f"{self.spec.output_root.rstrip('/')}/{self.spec.job_id}.zarr"

    def out_size(self, info: VideoInfo) -> tuple[int, int]:
        """(H', W') of the dense maps: the upright coded size, or downscaled to ``max_side``
        (equal whatever size the frames are decoded at, and never above it)."""
        out = output_size(*info.full_size, max_side=self.spec.max_side)
        if out[0] > info.height or out[1] > info.width:
            return output_size(info.height, info.width, max_side=self.spec.max_side)
        return out

    def expected_frames(self, info: VideoInfo) -> int | None:
        """Roughly how many frames the job will analyse (the container's own counts are not
        trusted for indexing, but are good enough to size the actor pools), or None."""
        n: float | None = info.frame_count_hint
        if n is None and info.duration_s and info.fps:
            n = info.duration_s * info.fps
        if not n:
            return None
        s = self.spec.sampling
        if info.fps:
            end = n / info.fps if s.end_s is None else min(s.end_s, n / info.fps)
            n = max(0.0, end - s.start_s) * info.fps
            if s.target_fps is not None:
                n *= min(1.0, s.target_fps / info.fps)
        return max(1, math.ceil(n / s.stride))

    def store_spec(self, info: VideoInfo) -> StoreSpec:
        h, w = self.out_size(info)
        return StoreSpec(
            tasks=self.spec.tasks,
            num_keypoints=output_keypoints(self.spec.model.size, self.infer.model.num_keypoints),
            num_classes=seg_classes(self.spec.model.family).num_classes,
            height=h,
            width=w,
            source_height=info.height,
            source_width=info.width,
            patch_size=self.patch_size(info),
            frames_per_shard=self.block_frames(info),
        )

    def block_frames(self, info: VideoInfo) -> int:
        """Frames per store block: 8, or for a live source as many as it samples in
        ``LIVE_COMMIT_S`` (at least 1), so its results commit within about that long of their
        batch (a live batch is emitted within ``DecodeSpec.live_batch_s``)."""
        if not is_live(info.source):
            return _BLOCK_FRAMES
        s = self.spec.sampling
        rate = info.fps or 25.0
        rate = min(rate, s.target_fps) if s.target_fps is not None else rate / s.stride
        return max(1, min(_BLOCK_FRAMES, math.floor(rate * LIVE_COMMIT_S)))

    def patch_size(self, info: VideoInfo) -> tuple[int, int] | None:
        """The store's per-person slot (H, W) for crop-mode dense results: the crop size (a
        patch is never finer than the crop nor than the frame), or None when dense results
        are frame maps (whole-frame mode) or there are none."""
        if self.spec.dense_mode != "crop" or not set(self.spec.tasks) & set(DENSE_TASKS):
            return None
        ch, cw = self.infer.resolved_crop_size
        return min(ch, info.height), min(cw, info.width)

    @property
    def max_persons(self) -> int:
        """Persons the store holds per frame: a frame with more detections is skipped."""
        return DEFAULT_MAX_PERSONS

    def batch_bytes(self, frame: tuple[int, int] | None = None) -> int:
        """Bytes one batch of this job holds between decode and commit: its RGB frames and
        its dense results (``map_bytes_per_pixel``), for ``frame`` (H, W) sources (default:
        the frame size the limits are sized for when unknown, 1080p)."""
        h, w = frame or TYPICAL_FRAME
        oh, ow = output_size(h, w, max_side=self.decode.limits.map_max_side)
        per_frame = h * w * 3 + oh * ow * self.decode.limits.map_bytes_per_pixel
        return self.spec.batch_size * per_frame

    def store_request(
        self,
        info: VideoInfo,
        models: list[ModelProvenance],
        *,
        resume: bool = False,
        fence: int | None = None,
        trunk: dict[str, Any] | None = None,
    ) -> StoreRequest:
        """What the writer stage is asked to create (or resume) for this job (``trunk``: the
        manifest of the trunk checkpoint the job runs, kept in the job's attributes)."""
        job = self.job_facts()
        if trunk is not None:
            job["trunk"] = trunk
        return StoreRequest(
            url=self.store_url,
            spec=self.store_spec(info),
            job=job,
            source={"uri": self.spec.source, **info.to_dict()},
            models=models,
            resume=resume,
            fence=fence,
        )

    def job_facts(self) -> dict[str, Any]:
        """The job's id and spec, and the label sets of its model's family: part classes
        (names and palette: Sapiens' 28 or Sapiens2's 29) and keypoint names."""
        classes = seg_classes(self.spec.model.family)
        k = output_keypoints(self.spec.model.size, self.infer.model.num_keypoints)
        labels = {
            "family": self.spec.model.family,
            "seg_classes": list(classes.names),
            "seg_palette": [list(c) for c in classes.palette],
            "keypoints": list(keypoint_set(k).names),
        }
        return {"job_id": self.spec.job_id, "spec": self.spec.to_dict(), "labels": labels}


def decode_floor(spec: JobSpec, crop_size: tuple[int, int]) -> SizeFloor | None:
    """The smallest upright frame ``spec``'s job can be decoded at without losing anything it
    keeps, or None: the coded size. Only asked for with ``spec.reduced_decode``.

    What reads the decoded frame, and at which resolution:

    * pose crops (and crop-mode dense tasks) take each person at its own resolution, up to
      ``crop_size`` for a person as tall as the crop: any downscale loses detail of small
      persons, so a job with pose or in crop mode is decoded at the coded size;
    * given boxes (detector ``boxes``) are in coded pixels: coded size;
    * whole-frame dense tasks see the frame resized to the model input ``crop_size`` (H, W),
      aspect not kept: the frame needs at least that height and width;
    * RT-DETR sees it resized to ``input_size`` square: at least that on both sides; the
      full-frame detector reads only the frame's extent;
    * the stored frame maps are ``output_size(coded, max_side)`` (``JobPlan.out_size``): the
      longer side needs at least ``max_side``; without ``max_side`` they are at the coded
      size, so nothing can be reduced.

    Nothing else reads the frames' pixels (the writer stores results, ``render`` decodes the
    source itself). Boxes then come out in the decoded frames' pixels, and the store records
    that size as its source size (see ``JobSpec.reduced_decode``).

    Args:
        spec: the job.
        crop_size: (H, W) of the model input (``InferSpec.resolved_crop_size``).
    """
    if not spec.reduced_decode or spec.max_side is None:
        return None
    if "pose" in spec.tasks or spec.dense_mode != "frame" or spec.detector == "boxes":
        return None
    height, width = crop_size
    if spec.detector == "rtdetr":
        side = spec.detection.input_size
        height, width = max(height, side), max(width, side)
    return SizeFloor(height=height, width=width, side=spec.max_side)


def plan_job(spec: JobSpec, *, device: str | None = None) -> JobPlan:
    """Stage settings for ``spec``; ``device`` overrides the automatic choice."""
    s = spec.sampling
    frame_maps = spec.dense_mode == "frame"
    limits = DecodeLimits(  # frame maps follow ``JobPlan.out_size``; patches the source size
        max_pixels=spec.limits.max_pixels,
        max_map_bytes=spec.limits.max_map_bytes,
        map_bytes_per_pixel=map_bytes_per_pixel(spec.tasks, spec.dense_mode),
        map_max_side=spec.max_side if frame_maps else None,
    )
    m = spec.model
    infer = InferSpec(
        tasks=spec.tasks,
        model=ModelSpec(
            size=m.size,
            family=m.family,
            weights=m.weights,
            fmt=m.fmt,
            num_keypoints=m.num_keypoints,
            device=device,
            dtype=m.dtype,
            compile=m.compile,
            channels_last=m.channels_last,
            flip_test=m.flip_test,
            cpu_threads=os.cpu_count(),
        ),
        batch_size=spec.batch_size,
        dense_mode=spec.dense_mode,
    )
    decode = DecodeSpec(
        batch_size=spec.batch_size,
        stride=s.stride,
        target_fps=s.target_fps,
        start_s=s.start_s,
        end_s=s.end_s,
        floor=decode_floor(spec, infer.resolved_crop_size),
        limits=limits,
        reconnects=spec.live.reconnects,
        reconnect_backoff_s=float(spec.live.backoff_s),
    )
    options: dict[str, Any] = {}
    if spec.detector == "rtdetr":
        options.update(spec.detection.detector_options())
    if spec.detector == "boxes" and spec.boxes is not None:
        options["boxes_by_source_index"] = {  # a score for every row: one array per frame
            k: [[*b, 1.0] if len(b) == 4 else list(b) for b in v] for k, v in spec.boxes.items()
        }
    return JobPlan(
        spec=spec, decode=decode, infer=infer, detector=spec.detector, detector_options=options
    )
