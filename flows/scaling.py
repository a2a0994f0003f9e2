"""How big the Sapiens pools should be, and how much of a GPU a member asks for.

``ScalePolicy`` / ``desired_actors`` decide how many members a model should have: enough to
drain the backlog (frames still to analyse, of running and queued jobs) within a target time at
the measured per-actor throughput, never more than the jobs that could use them, clamped to
[min, max]. ``move_to`` says where a job should move within a model's members. ``gpu_share``
sizes a member's GPU request from its model's worst-case memory, so several models fit on one
device; ``serve_defaults`` gives ``serve``'s limits from this machine's GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from actors.groups import ModelSpec
from models.spec import ARCHES
from models.spec2 import SAPIENS2_ARCHES

__all__ = [
    "ScalePolicy",
    "desired_actors",
    "detected_gpu_memory_gib",
    "detected_gpus",
    "detector_gpus",
    "gpu_share",
    "model_tag",
    "move_to",
    "serve_defaults",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalePolicy:
    """How a service sizes its Sapiens actor pools.

    Args:
        min_actors: members kept per model even with no work (0 lets GPU nodes go).
        max_actors: most members per model.
        idle_s: a member with no job for this long may be removed.
        target_drain_s: aim to finish the backlog within this time.
        default_fps: frames/s of one member until a throughput is measured.
        default_job_frames: frames assumed for a queued job of unknown length.
        actor_gpus: GPUs each member asks Ray for (0: CPU actors); None: 1 when this machine
            or the cluster has a GPU. A cluster whose GPU nodes start on demand has no GPU to
            detect while it is idle, so say 1 there. A fraction lets several members (of
            one model or of different ones) share a device.
        batch_size: crops per forward of a member; None: the batch size of the first job
            of its model.
        gpu_memory_gib: memory of one GPU, for sharing a device between members when
            ``actor_gpus`` is None (see :func:`gpu_share`); None: this machine's first GPU,
            else 80.
    """

    min_actors: int = 0
    max_actors: int = 1
    idle_s: float = 300.0
    target_drain_s: float = 300.0
    default_fps: float = 5.0
    default_job_frames: int = 300
    actor_gpus: float | None = None
    batch_size: int | None = None
    gpu_memory_gib: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_actors <= self.max_actors or self.max_actors < 1:
            raise ValueError(
                f"need 0 <= min_actors <= max_actors and max_actors >= 1, got "
                f"{self.min_actors}..{self.max_actors}"
            )
        for name in ("idle_s", "target_drain_s", "default_fps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.default_job_frames < 1 or (self.actor_gpus or 0) < 0:
            raise ValueError("default_job_frames must be >= 1 and actor_gpus >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def desired_actors(
    policy: ScalePolicy, *, backlog_frames: int, jobs: int, fps_per_actor: float | None
) -> int:
    """Members one model should have.

    Args:
        backlog_frames: frames still to analyse for running and queued jobs of the model.
        jobs: running and queued jobs of the model (a job uses one member).
        fps_per_actor: measured frames/s of one member, or None before any measurement.
    """
    if jobs <= 0:
        return policy.min_actors
    rate = fps_per_actor if fps_per_actor and fps_per_actor > 0 else policy.default_fps
    need = math.ceil(max(backlog_frames, 1) / (rate * policy.target_drain_s))
    need = max(1, min(need, jobs))
    return max(policy.min_actors, min(policy.max_actors, need))


#: GiB a member needs beyond its weights (activations of a batch, the CUDA context, the
#: allocator's slack), for released sizes at 1024x768 and for the tiny model.
ACTIVATION_GIB = {"tiny": 1.0}
RELEASED_ACTIVATION_GIB = 8.0
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def gpu_share(key: ModelSpec, gpu_memory_gib: float) -> float:
    """The fraction of one GPU a member of ``key`` asks for: ``1/k`` for the largest ``k``
    members whose worst-case memory fits the device (every task group loaded: released
    checkpoints are one backbone per task), at most 8 per device; 1 when even one does not
    fit (it gets the device to itself). Members of different models then share devices when
    they fit, instead of each holding a whole one."""
    groups = 1 if key.size == "tiny" else len(key.heads_for(key.tasks))
    width = _DTYPE_BYTES.get(key.dtype or "bfloat16", 2)
    weights_gib = groups * _block_params(key) * width / 2**30
    need = weights_gib + ACTIVATION_GIB.get(key.size, RELEASED_ACTIVATION_GIB)
    fit = max(1, min(8, int(gpu_memory_gib // need)))
    return math.floor(10_000 / fit) / 10_000  # Ray counts GPU fractions to 1e-4


def _block_params(key: ModelSpec) -> int:
    """Parameters of the encoder layers of one backbone of ``key`` (nearly all of it)."""
    if key.family == "sapiens2":
        arch = SAPIENS2_ARCHES[key.size]
        return 16 * arch.embed_dim**2 * arch.depth  # SPEC-sapiens2 §1.2, MHSA layers
    return ARCHES[key.size].block_params


def move_to(loads: list[int], mine: int) -> int | None:
    """Index of the member (jobs per member in ``loads``) a job on a member with ``mine`` jobs
    should move to, or None: the least loaded one, when it has at least two jobs fewer (a move
    between members one job apart would only swap their loads)."""
    if not loads:
        return None
    best = min(range(len(loads)), key=loads.__getitem__)
    return best if loads[best] <= mine - 2 else None


def serve_defaults(max_jobs: int | None, max_actors: int | None) -> tuple[int, int]:
    """``serve``'s ``--max-jobs`` and ``--max-actors`` where not given: one Sapiens actor per
    GPU of this machine, and 8 jobs per GPU (at least 4), so crops of several jobs fill each
    actor's batches; a job starts no process of its own, so a running job costs little."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return (
        max_jobs if max_jobs is not None else max(4, 8 * gpus),
        max_actors if max_actors is not None else max(1, gpus),
    )


def detected_gpu_memory_gib() -> float | None:
    """Memory of this machine's first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


DETECTOR_GPU_SHARE = 0.1
"""The share of a GPU a person-stage member asks for on a cluster with GPUs: RT-DETR R18-R101
holds 20-76 M parameters, well under a tenth of any data-centre GPU's memory."""


def detector_gpus() -> float:
    """What person-stage members ask Ray for: ``DETECTOR_GPU_SHARE`` of a GPU on a machine or
    cluster with GPUs (detectors with weights then run there), else none."""
    return DETECTOR_GPU_SHARE if detected_gpus() > 0 else 0.0


def detected_gpus() -> float:
    """1 when this machine or the running Ray cluster has a GPU, else 0."""
    import torch

    if torch.cuda.is_available():
        return 1.0
    try:
        import ray

        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0:
            return 1.0
    except Exception:  # no cluster to ask: CPU actors
        pass
    return 0.0


_COMPILE_TAGS = {"off": "", "default": "compiled"}


def model_tag(key: ModelSpec) -> str:
    """A model's metric tag: its size, and what sets it apart from others of that size."""
    extras = [key.weights if key.weights != "hub" else "", key.fmt if key.fmt != "original" else ""]
    compiled = _COMPILE_TAGS.get(str(key.compile), f"compiled-{key.compile}")
    extras += [key.dtype or "", compiled, "cl" if key.channels_last else ""]
    extras += ["flip" if key.flip_test else ""]
    extras += [f"seed{key.seed}" if key.size == "tiny" and key.seed else ""]
    return ":".join([key.name, *(e for e in extras if e)])
