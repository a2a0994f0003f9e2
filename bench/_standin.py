"""The device stand-in of bench/overhead.py: a Sapiens actor whose device work sleeps.

:class:`StandInSapiensWorker` is the real ``SapiensWorker`` with its analyzer call replaced by
:class:`DeviceStandIn`: a call's crops go through the worker's real dynamic batcher, whose
forward sleeps for the device time a GPU would take (it burns no host CPU), and the call
returns :func:`device_outputs`: what leaves the device, in the real shapes and dtypes.
"""

from __future__ import annotations

import pickle
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from actors.infer import SapiensWorker
from models.analyze import Analyzer, PersonResults
from models.patches import PersonPatches, patch_boxes, patch_sizes
from models.preprocess import boxes_to_center_scale
from models.spec import INPUT_SIZE

NUM_KEYPOINTS = 308
DEFAULT_DEVICE_MS = 22.0
#: (H, W) of the released heads' outputs for a 1024x768 crop (SPEC-sapiens: seg and normal
#: x8, depth x16 of the 64x48 grid).
HEAD_SIZES = {"seg": (512, 384), "depth": (1024, 768), "normal": (512, 384)}


# -- what leaves the device ----------------------------------------------------------------------
def device_outputs(
    frames_shape: Sequence[int],
    boxes: torch.Tensor,
    frame_index: torch.Tensor,
    scores: torch.Tensor,
    out_size: tuple[int, int],
    tasks: Sequence[str],
    *,
    num_keypoints: int = NUM_KEYPOINTS,
) -> PersonResults:
    """What leaves the device for one batch, as ``models.analyze.Analyzer`` returns it.

    Keypoints (N, K, 2) float32 inside each box and their scores (N, K) float32; per-person
    patches (``models.patches``) on each person's box at the released heads' resolution over
    it (seg and normal 512x384 per 1024x768 crop, depth 1024x768), in the stored dtypes,
    packed as the device's one copy per field gives them. Each person is an upright ellipse
    painted from a cached sprite (part bands, a depth bump, ellipsoid normals, small noise), so
    the writer compresses data shaped like real predictions. Building them costs the host
    about what receiving them from a device would (one copy of each packed buffer).

    Args:
        frames_shape: (F, 3, H, W) of the batch's frames.
        boxes: (N, 4) xyxy boxes in frame pixels.
        frame_index: (N,) frame of each person.
        scores: (N,) detection scores.
        out_size: (H', W') of frame maps (unused: crop-mode results are per person).
        tasks: the tasks asked for.
        num_keypoints: K.
    """
    height, width = int(frames_shape[-2]), int(frames_shape[-1])
    xyxy = boxes.numpy().astype(np.float64)
    keypoints = keypoint_scores = None
    if "pose" in tasks:
        unit, kp_scores = _keypoint_template(num_keypoints)
        origin, extent = xyxy[:, None, :2], xyxy[:, None, 2:] - xyxy[:, None, :2]
        keypoints = torch.from_numpy((origin + unit[None] * extent).astype(np.float32))
        keypoint_scores = torch.from_numpy(np.repeat(kp_scores[None], len(xyxy), axis=0))
    patches = None
    dense = [t for t in HEAD_SIZES if t in tasks]
    if dense:
        patches = _patches(xyxy, (height, width), dense)
    return PersonResults(keypoints=keypoints, keypoint_scores=keypoint_scores, patches=patches)


def _patches(xyxy: np.ndarray, frame_hw: tuple[int, int], tasks: list[str]) -> PersonPatches:
    rect = patch_boxes(xyxy, frame_hw)
    crop_scale = boxes_to_center_scale(torch.from_numpy(xyxy))[1].numpy()
    sizes: dict[str, np.ndarray] = {}
    fields: dict[str, np.ndarray] = {}
    for task in tasks:
        head = HEAD_SIZES[task]
        seen = (min(head[0], INPUT_SIZE[0]), min(head[1], INPUT_SIZE[1]))
        hw = sizes[task] = patch_sizes(rect, crop_scale, seen)
        sprites = [_sprite(int(h), int(w)) for h, w in hw]
        if task == "seg":
            fields["part"] = np.concatenate([s.part.ravel() for s in sprites])
            fields["fg"] = np.concatenate([s.fg.ravel() for s in sprites])
        elif task == "depth":
            fields["depth"] = np.concatenate([s.depth.ravel() for s in sprites])
            fields["depth_scale"] = np.full(len(rect), 4.0, np.float32)
        else:
            fields["normal"] = np.concatenate([s.normal.reshape(-1, 3) for s in sprites])
    return PersonPatches(box=rect, sizes=sizes, **fields)


@dataclass(frozen=True, slots=True)
class _Sprite:
    """One person's patches over its box, in the stored dtypes."""

    part: np.ndarray  # (h, w) uint8
    fg: np.ndarray  # (h, w) uint8
    depth: np.ndarray  # (h, w) float16, depth / scale
    normal: np.ndarray  # (h, w, 3) int8


# Caches of the stand-in (plain dicts: the functions reach Ray's workers pickled by value, and a
# functools.lru_cache wrapper would be pickled as a reference to a module they cannot import).
_TEMPLATES: dict[int, tuple[np.ndarray, np.ndarray]] = {}
_SPRITES: dict[tuple[int, int], _Sprite] = {}


def _keypoint_template(k: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) keypoints in unit box coordinates and (K,) float32 scores."""
    if k not in _TEMPLATES:
        rng = np.random.default_rng(k)
        _TEMPLATES[k] = rng.uniform(0.05, 0.95, (k, 2)), rng.uniform(0.2, 1.0, k).astype(np.float32)
    return _TEMPLATES[k]


def _sprite(h: int, w: int) -> _Sprite:
    """One person as an upright ellipse filling an (h, w) box (cached)."""
    if (h, w) not in _SPRITES:
        if len(_SPRITES) >= 256:
            _SPRITES.clear()
        _SPRITES[h, w] = _draw_sprite(h, w)
    return _SPRITES[h, w]


def _draw_sprite(h: int, w: int) -> _Sprite:
    rng = np.random.default_rng([h, w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = (xx + 0.5) / (w / 2) - 1.0, (yy + 0.5) / (h / 2) - 1.0
    r2 = u * u + v * v
    inside = r2 < 1.0
    band = np.clip(((v + 1.0) * 6.5).astype(np.int32), 0, 12)
    z = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    depth = (4.0 - 0.3 * z + rng.normal(0.0, 0.002, z.shape)) / 4.0
    n = np.stack([u, v, z + 0.05], axis=-1) + rng.normal(0.0, 0.01, (h, w, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    fg = np.clip(1.0 - r2 + rng.normal(0.0, 0.02, r2.shape), 0.0, 1.0)
    return _Sprite(
        part=np.where(inside, 1 + band * 2 + (u > 0), 0).astype(np.uint8),
        fg=np.rint(fg * 255).astype(np.uint8),
        depth=depth.astype(np.float16),
        normal=np.rint(n * 127).astype(np.int8),
    )


# -- the stand-in in the Sapiens actor -----------------------------------------------------------
class DeviceStandIn:
    """Takes the ``Analyzer``'s place in a ``SapiensWorker``: the crops of a call go through
    the worker's real dynamic batcher, whose forward (the worker's) sleeps for the device time;
    the results are :func:`device_outputs`, whose CPU time goes to ``count``. Task names are
    checked by the real analyzer."""

    def __init__(self, real: Analyzer, count: Callable[[str, float], None]) -> None:
        self.real, self.tasks, self._count = real, real.tasks, count

    def check_tasks(self, tasks: Sequence[str]) -> tuple[str, ...]:
        return self.real.check_tasks(tasks)

    def __call__(
        self,
        frames: torch.Tensor,
        frame_index: torch.Tensor,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        *,
        out_size: tuple[int, int] | None = None,
        forward: Any = None,
        tasks: Sequence[str] | None = None,
        dense_mode: str | None = None,
    ) -> PersonResults:
        tasks = self.tasks if tasks is None else self.check_tasks(tasks)
        if len(boxes):  # one placeholder row per crop: the batcher only counts them
            assert forward is not None, "the stand-in runs inside a SapiensWorker call"
            forward(torch.zeros((len(boxes), 1)), frozenset(tasks))
        size = out_size or (int(frames.shape[-2]), int(frames.shape[-1]))
        c0 = time.thread_time()
        out = device_outputs(tuple(frames.shape), boxes, frame_index, scores, size, tasks)
        self._count("outputs_cpu_s", time.thread_time() - c0)
        return out


def serialized_bytes(obj: object) -> int:
    """Bytes of ``obj`` pickled with protocol 5, out-of-band buffers included (what Ray's
    serializer puts in the object store, to within its framing)."""
    out_of_band = 0

    def count(buffer: pickle.PickleBuffer) -> None:
        nonlocal out_of_band
        out_of_band += buffer.raw().nbytes

    return len(pickle.dumps(obj, protocol=5, buffer_callback=count)) + out_of_band


class StandInSapiensWorker(SapiensWorker):
    """``SapiensWorker`` with the device replaced by :class:`DeviceStandIn`; counts the bytes
    of what each call returns. ``device_ms_per_person`` is set by :func:`stand_in_class`."""

    device_ms_per_person: ClassVar[float] = DEFAULT_DEVICE_MS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._sent_lock = threading.Lock()
        keys = ("frames", "result_bytes", "zero_copy_frames", "outputs_cpu_s")
        self._sent = dict.fromkeys(keys, 0.0)
        self._stand_in: DeviceStandIn | None = None
        super().__init__(*args, **kwargs)

    def _analyzer_for(self, tasks: tuple[str, ...]) -> Any:
        real = super()._analyzer_for(tasks)
        if self._stand_in is None or self._stand_in.real is not real:
            self._stand_in = DeviceStandIn(real, self._count)
        return self._stand_in

    def _forward(self, images: torch.Tensor, want: frozenset[str] | None) -> dict[str, Any]:
        n = int(images.shape[0])
        time.sleep(self.device_ms_per_person * n / 1000)  # the device's time; no host CPU
        return {t: torch.zeros((n, 1)) for t in (want or self.tasks)}

    def __call__(self, batch: Any, persons: Any, *args: Any, **kwargs: Any) -> Any:
        records = super().__call__(batch, persons, *args, **kwargs)
        self._count("result_bytes", serialized_bytes(records))
        self._count("frames", len(batch))
        # Frames read in place from the object store's shared memory arrive read-only.
        self._count("zero_copy_frames", 0 if batch.frames.flags.writeable else len(batch))
        return records

    def _count(self, key: str, value: float) -> None:
        with self._sent_lock:
            self._sent[key] += value

    def sent(self) -> dict[str, float]:
        """Totals so far: frames, their serialized result bytes, frames that arrived
        zero-copy, CPU seconds spent building the stand-in's outputs."""
        with self._sent_lock:
            return dict(self._sent)


def stand_in_class(device_ms_per_person: float) -> type[StandInSapiensWorker]:
    """A :class:`StandInSapiensWorker` with this device time (a class made here is pickled by
    value, its device time with it)."""
    attrs = {"device_ms_per_person": float(device_ms_per_person), "__module__": __name__}
    return type("StandInSapiensWorker", (StandInSapiensWorker,), attrs)


@contextmanager
def sapiens_stand_in(device_ms_per_person: float) -> Iterator[type[StandInSapiensWorker]]:
    """Jobs run in this block make their Sapiens actor from the stand-in class."""
    from ray import cloudpickle

    import flows.ownactors as own

    if __name__ != "__main__":  # imported: Ray workers need not find this file
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cls, real = stand_in_class(device_ms_per_person), own.SapiensWorker
    own.SapiensWorker = cls  # type: ignore[misc]
    try:
        yield cls
    finally:
        own.SapiensWorker = real  # type: ignore[misc]
