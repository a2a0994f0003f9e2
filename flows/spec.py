"""``JobSpec``: everything that defines one video job, validated, frozen and round-trippable."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from actors.groups import FAMILY_SIZES, FAMILY_TASKS, keypoints_problem
from flows.errors import SpecError
from media import MAX_PIXELS
from models.analyze import DENSE_MODES, DenseMode
from models.detect import DETECTOR_DEVICES, DetectorKind
from models.detect import MODEL_NAMES as DETECTOR_MODELS
from models.runtime import compile_mode
from storage.jobs import check_priority
from storage.schema import TASKS, Task

__all__ = [
    "DENSE_MODES",
    "DETECTORS",
    "DETECTOR_MODELS",
    "PLACEMENTS",
    "TASK_NAMES",
    "DenseMode",
    "Detection",
    "JobSpec",
    "Limits",
    "Live",
    "ModelChoice",
    "Placement",
    "Sampling",
]

# The vocabulary of a job, defined once: the tasks are the store schema's, the detectors the
# detector module's, the dense modes the analyzer's; JobSpec validates against these and the
# CLI offers them as choices.
TASK_NAMES: tuple[Task, ...] = TASKS
DETECTORS: tuple[DetectorKind, ...] = get_args(DetectorKind)
Placement = Literal["fused", "split"]
"""``fused``: heads inside the backbone actor; ``split``: head actors on fractional GPUs."""
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # the registry's ids (storage/_keys)


def _from_dict(cls: type, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(raw).__name__}")
    valid = {f.name for f in fields(cls)}
    if unknown := sorted(set(raw) - valid):
        raise SpecError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
    return dict(raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelChoice:
    """Which Sapiens model runs.

    Args:
        size: ``tiny`` (random weights, for tests and demos) or a released size of
            ``family`` (``actors.groups.FAMILY_SIZES``).
        family: ``sapiens`` (v1, CC-BY-NC-4.0 weights) or ``sapiens2`` (the 2026 family, under
            the "Sapiens2 License": see ``models.licence``).
        weights: a directory of checkpoint files, or ``hub`` for the Hugging Face hub; ignored
            for ``tiny``.
        fmt: checkpoint format on the hub: ``original``, ``torchscript`` or ``bfloat16``.
        num_keypoints: pose keypoint set (308, 133 or 17). Released Sapiens models load the
            checkpoint of that set: 308 from the hub, 133 (COCO-WholeBody) and 17 (COCO) from
            a ``weights`` directory holding the file SPEC §8 names (facebook's hub
            repositories have none); released Sapiens2 models are 308 only.
        dtype: ``float32``/``bfloat16``/``float16``; None = bf16 on GPU, fp32 on CPU.
        compile: ``torch.compile`` mode of each backbone group: ``off``, ``default``,
            ``reduce-overhead`` (CUDA graphs of the fixed batch) or ``max-autotune``; true
            and false mean ``default`` and ``off``.
        channels_last: convolutions in channels-last memory order.
        flip_test: pose test-time augmentation as the official test config
            (``flip_test=True``): each crop and its mirror image run, the mirrored heatmaps
            are flipped back with left/right keypoints swapped, and the two are averaged
            (twice the pose forwards; fused placement only).
    """

    size: str = "tiny"
    family: str = "sapiens"
    weights: str = "hub"
    fmt: str = "original"
    num_keypoints: int = 308
    dtype: str | None = None
    compile: bool | str = "off"
    channels_last: bool = False
    flip_test: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.flip_test, bool):
            raise SpecError(f"model.flip_test must be true or false, got {self.flip_test!r}")
        try:
            object.__setattr__(self, "compile", compile_mode(self.compile))
        except ValueError as e:
            raise SpecError(f"model.{e}") from None
        if self.family not in FAMILY_SIZES:
            msg = f"model.family must be one of {list(FAMILY_SIZES)}, got {self.family!r}"
            raise SpecError(msg)
        sizes = FAMILY_SIZES[self.family]
        if self.size not in sizes:
            msg = f"model.size of a {self.family} model must be one of {list(sizes)}, got "
            raise SpecError(msg + repr(self.size))
        if self.family == "sapiens2" and self.fmt != "original":
            raise SpecError(
                f"Sapiens2 is released as safetensors only (fmt 'original'): {self.fmt!r}"
            )
        if problem := keypoints_problem(self.family, self.size, self.weights, self.num_keypoints):
            raise SpecError(f"model.num_keypoints: {problem}")

    @property
    def random_weights(self) -> bool:
        return self.size == "tiny"

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the model serves (Sapiens2 adds ``pointmap``; its ``depth`` is the
        pointmap's metric z)."""
        return FAMILY_TASKS[self.family]

    @property
    def default_tasks(self) -> tuple[str, ...]:
        """A job's tasks when it names none: every task of its own heads (Sapiens2: pose, seg,
        normal and pointmap, whose z is the depth)."""
        return tuple(t for t in self.tasks if not (self.family == "sapiens2" and t == "depth"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Detection:
    """Settings of the ``rtdetr`` person detector (the other detectors have none).

    Args:
        model: kornia's RT-DETR variant (``rtdetr_r18vd`` ... ``rtdetr_r101vd``).
        weights: a checkpoint in the published layout: a local file, or
            ``hf://owner/repo/file`` on the Hugging Face hub (its cache first); None: the
            published weights through kornia's downloader (its torch hub cache first). A
            ``serve`` reads only files and hub organisations its weights allow-list admits.
        input_size: square side the frames are resized to (a multiple of 32, >= 128).
        score_thr: lowest person score kept.
        nms_iou: overlap above which the weaker of two person boxes is dropped.
        device: ``auto`` (CUDA where the person stage has a share of a GPU: on clusters with
            GPUs it asks Ray for one), ``cpu`` or ``cuda`` (a job fails before decoding when
            its person stage has no GPU).
    """

    model: str = "rtdetr_r18vd"
    weights: str | None = None
    input_size: int = 640
    score_thr: float = 0.3
    nms_iou: float = 0.3
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in DETECTOR_MODELS:
            raise SpecError(
                f"detection.model must be one of {list(DETECTOR_MODELS)}, got {self.model!r}"
            )
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 128 or size % 32:
            raise SpecError(f"detection.input_size must be a multiple of 32 >= 128, got {size!r}")
        for name in ("score_thr", "nms_iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise SpecError(f"detection.{name} must be in (0, 1), got {value!r}")
        if self.device not in DETECTOR_DEVICES:
            raise SpecError(
                f"detection.device must be one of {list(DETECTOR_DEVICES)}, got {self.device!r}"
            )
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise SpecError(
                f"detection.weights must be a file path, hf://owner/repo/file or null, "
                f"got {self.weights!r}"
            )

    def detector_options(self) -> dict[str, Any]:
        """The RT-DETR detector's constructor options (``device`` resolved by the stage)."""
        return {
            "device": self.device,
            "model_name": self.model,
            "weights": self.weights,
            "input_size": self.input_size,
            "score_thr": float(self.score_thr),
            "nms_iou": float(self.nms_iou),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    """Which decoded frames are processed: every ``stride``-th, or resampled to ``target_fps``,
    within ``[start_s, end_s)``."""

    stride: int = 1
    target_fps: float | None = None
    start_s: float = 0.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise SpecError(f"sampling.stride must be >= 1, got {self.stride}")
        if self.target_fps is not None and self.target_fps <= 0:
            raise SpecError(f"sampling.target_fps must be > 0, got {self.target_fps}")
        if self.start_s < 0 or (self.end_s is not None and self.end_s <= self.start_s):
            raise SpecError(
                f"sampling: need 0 <= start_s < end_s, got {self.start_s}, {self.end_s}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits, checked when the source's frame size is known (before any frame is
    decoded for the job or reaches the Sapiens actor), the frame size again on every decoded
    frame; a video over a limit fails its job alone with ``ResourceLimitError``.

    Args:
        max_pixels: most decoded pixels per frame, width x height before any downscale;
            default 8K UHD (7680 x 4320).
        max_map_bytes: most bytes of dense maps in one batch: output width x height (after
            ``max_side``) x bytes per pixel of the tasks x ``batch_size``; default 8 GiB,
            which admits 8K at the default tasks and batch size.
    """

    max_pixels: int = MAX_PIXELS
    max_map_bytes: int = 8 * 2**30

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_map_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"limits.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Live:
    """How a live source (RTSP, RTMP, SRT, UDP...) is read: after it drops, it is reopened up
    to ``reconnects`` times in a row (a decoded frame starts the count again), the first
    attempt after ``backoff_s`` seconds and each further one after twice the previous wait
    (at most 30 s); then the job fails, its committed frames kept.

    Args:
        reconnects: attempts in a row before the job fails (0: fail at the first drop).
        backoff_s: the wait before the first attempt, in seconds.
    """

    reconnects: int = 5
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        value = self.reconnects
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000:
            raise SpecError(f"live.reconnects must be an int in [0, 10000], got {value!r}")
        value = self.backoff_s
        bad = isinstance(value, bool) or not isinstance(value, int | float)
        if bad or not 0 < value <= 3600:
            raise SpecError(f"live.backoff_s must be a number in (0, 3600], got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """One video job.

    Args:
        source: a local path or ``file://`` URL, an http(s) URL or an RTSP/RTMP stream.
        job_id: letters, digits, ``_.-`` (no path separators); generated when omitted.
        tasks: any of pose, seg, depth, normal (and pointmap on a Sapiens2 model, whose depth
            is the pointmap's metric z); None: the model's ``default_tasks``.
        model: the model choice.
        detector: ``full-frame``, ``boxes`` (per-frame boxes in ``boxes``) or ``rtdetr``.
        boxes: source frame index -> list of xyxy boxes, each optionally with a fifth value,
            its score in (0, 1] (default 1), which the tracker sees as a detector's
            (``detector="boxes"`` only).
        detection: the ``rtdetr`` detector's model, weights, input size and thresholds.
        sampling: frame sampling.
        output_root: directory or fsspec URL under which ``<job_id>.zarr`` is written.
        max_side: downscale dense outputs so their longer side is at most this (None = source).
        reduced_decode: decode the frames at the smallest size that loses nothing the job
            keeps (``flows.plan.decode_floor``), which is below the source size only for
            whole-frame dense jobs without pose, with ``max_side`` and a full-frame or RT-DETR
            detector; boxes and the store's source size are then in the decoded frames' pixels
            (the coded size stays in the store's ``source`` attributes).
        dense_mode: ``crop``: dense tasks run on the person crops and are composited into
            frame maps; ``frame``: they run once on the whole frame resized to the model
            input, as the official demos do (pose still uses the crops; fused placement only).
        placement: ``fused`` (heads inside the backbone actor) or ``split`` (head actors).
        batch_size: crops per backbone batch.
        priority: the job's place in the queue of ``submit``: higher is delivered to a
            service first, equal priorities in submit order (a 32-bit int; ``run`` has no
            queue).
        limits: resource limits (frame pixels, dense map bytes per batch).
        live: how a live source reconnects after it drops (ignored for files and URLs of
            whole videos).
    """

    source: str
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    tasks: tuple[Task, ...] | None = None
    model: ModelChoice = field(default_factory=ModelChoice)
    detector: DetectorKind = "full-frame"
    boxes: Mapping[int, tuple[tuple[float, ...], ...]] | None = None
    detection: Detection = field(default_factory=Detection)
    sampling: Sampling = field(default_factory=Sampling)
    output_root: str = "out/results"
    max_side: int | None = None
    reduced_decode: bool = False
    dense_mode: DenseMode = "crop"
    placement: Placement = "fused"
    batch_size: int = 8
    priority: int = 0
    limits: Limits = field(default_factory=Limits)
    live: Live = field(default_factory=Live)

    def __post_init__(self) -> None:
        if not self.source:
            raise SpecError("source is empty: give a video path or URL")
        if not isinstance(self.job_id, str) or not _JOB_ID.fullmatch(self.job_id):
            raise SpecError(f"job_id {self.job_id!r} must match {_JOB_ID.pattern}")
        if not isinstance(self.model, ModelChoice):
            raise SpecError(f"model: expected a ModelChoice, got {type(self.model).__name__}")
        if self.tasks is None:
            object.__setattr__(self, "tasks", self.model.default_tasks)
        offered = self.model.tasks
        bad = [t for t in self.tasks or () if t not in offered]
        if bad or not self.tasks:
            msg = f"tasks of a {self.model.family} model must be a non-empty subset of {offered}"
            raise SpecError(f"{msg}, got {self.tasks}")
        for name, value, allowed in (
            ("detector", self.detector, DETECTORS),
            ("dense_mode", self.dense_mode, DENSE_MODES),
            ("placement", self.placement, PLACEMENTS),
        ):
            if value not in allowed:
                raise SpecError(f"{name} must be one of {allowed}, got {value!r}")
        if self.dense_mode == "frame" and self.placement == "split":
            raise SpecError("dense_mode 'frame' runs in fused placement only")
        if self.model.family == "sapiens2" and self.placement == "split":
            raise SpecError("Sapiens2 models run in fused placement only")
        if self.model.flip_test and self.placement == "split":
            raise SpecError("model.flip_test needs the pose head beside its backbone: fused only")
        if (self.detector == "boxes") != (self.boxes is not None):
            raise SpecError("boxes are given exactly when detector is 'boxes'")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        try:
            check_priority(self.priority)
        except ValueError as e:
            raise SpecError(str(e)) from None
        if self.max_side is not None and self.max_side < 16:
            raise SpecError(f"max_side must be >= 16, got {self.max_side}")
        if not isinstance(self.reduced_decode, bool):
            raise SpecError(f"reduced_decode must be true or false, got {self.reduced_decode!r}")
        if not isinstance(self.limits, Limits):
            raise SpecError(f"limits: expected a Limits, got {type(self.limits).__name__}")
        if not isinstance(self.live, Live):
            raise SpecError(f"live: expected a Live, got {type(self.live).__name__}")
        _check_output_root(self.output_root)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobSpec:
        """Build from plain data (YAML/JSON/msgpack); unknown keys are rejected by name."""
        data = _from_dict(cls, raw, "job spec")
        if "model" in data:
            data["model"] = ModelChoice(**_from_dict(ModelChoice, data["model"], "model"))
        if "sampling" in data:
            data["sampling"] = Sampling(**_from_dict(Sampling, data["sampling"], "sampling"))
        if "detection" in data:
            data["detection"] = Detection(**_from_dict(Detection, data["detection"], "detection"))
        if "limits" in data:
            data["limits"] = Limits(**_from_dict(Limits, data["limits"], "limits"))
        if "live" in data:
            data["live"] = Live(**_from_dict(Live, data["live"], "live"))
        if "tasks" in data:
            data["tasks"] = tuple(data["tasks"])
        if data.get("boxes") is not None:
            data["boxes"] = _parse_boxes(data["boxes"])
        try:
            return cls(**data)
        except TypeError as e:
            raise SpecError(f"job spec: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``from_dict`` turns back into an equal spec."""
        out = asdict(self)
        out["tasks"] = list(self.tasks or ())
        if self.boxes is not None:
            out["boxes"] = {str(k): [list(b) for b in v] for k, v in self.boxes.items()}
        return out


def _parse_boxes(raw: Any) -> dict[int, tuple[tuple[float, ...], ...]]:
    if not isinstance(raw, Mapping):
        raise SpecError(f"boxes: expected a mapping of frame index -> boxes, got {type(raw)}")
    out: dict[int, tuple[tuple[float, ...], ...]] = {}
    for key, boxes in raw.items():
        try:
            index = int(key)
            parsed = tuple(tuple(float(v) for v in row) for row in boxes)
        except (TypeError, ValueError) as e:
            raise SpecError(
                f"boxes[{key!r}]: expected a list of [x1, y1, x2, y2(, score)], got {boxes!r}"
            ) from e
        for row in parsed:
            if len(row) not in (4, 5):
                raise SpecError(f"boxes[{index}]: expected [x1, y1, x2, y2(, score)], got {row}")
            x1, y1, x2, y2 = row[:4]
            if not (x2 > x1 and y2 > y1):
                raise SpecError(f"boxes[{index}]: box {[x1, y1, x2, y2]} has no area")
            if len(row) == 5 and not 0 < row[4] <= 1:
                raise SpecError(f"boxes[{index}]: score must be in (0, 1], got {row[4]}")
        out[index] = parsed
    return out


def _check_output_root(root: object) -> None:
    """Refuse an output root that is empty or the filesystem root (lexically; no file I/O:
    ``storage.check_output_root`` also resolves links when the root is used)."""
    if not isinstance(root, str) or not root.strip():
        raise SpecError("output_root is empty: give a directory or a URL for the result stores")
    if "://" in root:
        scheme, rest = root.split("://", 1)
        if scheme != "file":
            if not rest.strip("/"):
                raise SpecError(f"output_root {root!r} names no bucket or path")
            return
        root = rest or "/"
    if not os.path.normpath(os.path.abspath(root)).strip("/"):
        raise SpecError(
            f"output_root {root!r} is the filesystem root; give a directory for the stores"
        )
