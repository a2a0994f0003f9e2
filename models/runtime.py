"""Running a :class:`~models.sapiens.SapiensModel` efficiently on a device.

GPU path: bfloat16 weights and activations, ``scaled_dot_product_attention`` (flash kernels where
the head width allows; the 2B model's 60-wide heads fall back to the memory-efficient kernel),
optional ``torch.compile`` (``reduce-overhead`` adds CUDA graphs), and fixed-shape batches
(the last batch is zero-padded, its padded outputs dropped) so compiled graphs are reused.
CPU path: float32. Both give the same outputs within bfloat16 tolerance; every stage is
per-sample (LayerNorm per token, InstanceNorm per image), so padding never changes a real
sample's output.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

__all__ = ["COMPILE_MODES", "CompileMode", "Predictor", "RuntimeSpec", "compile_mode"]

CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
"""``torch.compile`` modes: ``reduce-overhead`` replays CUDA graphs of the fixed batch shape
(on CUDA; elsewhere it compiles as ``default``); ``max-autotune`` also tunes kernels."""
COMPILE_MODES: tuple[CompileMode, ...] = get_args(CompileMode)


def compile_mode(value: bool | str) -> CompileMode:
    """The mode named by ``value``: True is ``default``, False is ``off``.

    Raises:
        ValueError: For any other value.
    """
    if value is True:
        return "default"
    if value is False:
        return "off"
    if value not in COMPILE_MODES:
        raise ValueError(f"compile must be a bool or one of {list(COMPILE_MODES)}, got {value!r}")
    return value  # type: ignore[return-value]


logger = logging.getLogger(__name__)

_DTYPES: Mapping[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeSpec:
    """How to run a model.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``float32``, ``bfloat16`` or ``float16``; ``None`` picks bfloat16 on CUDA and
            float32 elsewhere.
        compile: a :data:`CompileMode` (or a bool: True is ``default``) for ``torch.compile``
            (first batches are slow while it compiles).
        batch_size: fixed batch the model always sees.
        channels_last: keep 4-D weights and images in channels-last memory order (the
            convolutions of the patch embedding and the heads; on CUDA, cuDNN's preferred
            layout for bf16 convolutions).
    """

    device: str = "cpu"
    dtype: str | None = None
    compile: bool | CompileMode = "off"
    batch_size: int = 8
    channels_last: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "compile", compile_mode(self.compile))
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype is not None:
            return _DTYPES[self.dtype]
        return torch.bfloat16 if torch.device(self.device).type == "cuda" else torch.float32


class Predictor:
    """Normalised images (N, 3, H, W) -> ``{task: raw output}`` in fixed-size batches.

    Args:
        model: a module mapping images to ``{name: tensor}`` (a backbone group, or one part of
            it in split placement); moved to the spec's device and dtype.
        spec: device, dtype, compile and batch size.
    """

    def __init__(self, model: nn.Module, spec: RuntimeSpec) -> None:
        self.spec = spec
        self.device = torch.device(spec.device)
        self.dtype = spec.torch_dtype
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._layout = torch.channels_last if spec.channels_last else torch.contiguous_format
        if spec.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mode = spec.compile
        self._graphs = mode == "reduce-overhead" and self.device.type == "cuda"
        if mode == "off":
            self._forward = self.model
        else:
            self._forward = torch.compile(self.model, mode=None if mode == "default" else mode)
        logger.debug(
            "predictor %s on %s/%s batch=%d compile=%s",
            type(model).__name__,
            self.device,
            self.dtype,
            spec.batch_size,
            spec.compile,
        )

    @torch.inference_mode()
    def __call__(self, images: Tensor, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Raw outputs of the heads in ``tasks`` (default: all of the model's), in the model's
        dtype: bfloat16 heatmaps and maps stay half the size of float32 until their decoding
        converts what it reads."""
        if images.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, C, H, W), got {tuple(images.shape)}")
        n, bs = images.shape[0], self.spec.batch_size
        chunks: dict[str, list[Tensor]] = {}
        for start in range(0, n, bs):
            batch = images[start : start + bs].to(self.device, self.dtype, non_blocking=True)
            batch = batch.contiguous(memory_format=self._layout)
            real = batch.shape[0]
            if real < bs:
                pad = batch.new_zeros((bs - real, *batch.shape[1:]))
                batch = torch.cat((batch, pad))
            if self._graphs:  # a new replay may reuse the graph's output memory
                torch.compiler.cudagraph_mark_step_begin()
            for task, out in self._run(batch, tasks).items():
                kept = out[:real]
                chunks.setdefault(task, []).append(kept.clone() if self._graphs else kept)
        if n == 0:
            return {}
        return {task: torch.cat(parts) for task, parts in chunks.items()}

    def _run(self, batch: Tensor, tasks: Iterable[str] | None) -> dict[str, Tensor]:
        if tasks is None:
            return self._forward(batch)
        return self._forward(batch, tuple(tasks))
