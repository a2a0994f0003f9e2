"""Host <-> device copies that do not stall the device.

On CUDA, frames go up through page-locked (pinned) host memory on a separate copy stream, so
the copy overlaps the forwards already queued on the compute stream, and the compute stream
waits for it with an event rather than the host waiting for the device. Results come down the
same way: into pinned memory on the copy stream, and the host waits only for that copy.
Elsewhere these are plain ``.to()`` copies.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

__all__ = ["to_device", "to_host"]

_streams: dict[tuple[int, int], torch.cuda.Stream] = {}
_lock = threading.Lock()


def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    """One copy stream per device and thread (calls of a threaded actor copy concurrently)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, threading.get_ident())
    with _lock:
        stream = _streams.get(key)
        if stream is None:
            stream = _streams[key] = torch.cuda.Stream(device=index)
    return stream


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; from the host to CUDA through pinned memory on a copy stream
    that the current stream then waits for."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    stream = _copy_stream(device)
    pinned = tensor.pin_memory()  # the caching host allocator keeps it until the copy is done
    with torch.cuda.stream(stream):
        out = pinned.to(device, non_blocking=True)
    compute = torch.cuda.current_stream(device)
    compute.wait_stream(stream)
    out.record_stream(compute)  # its memory belongs to the compute stream from here on
    return out


def to_host(tensor: Tensor) -> Tensor:
    """``tensor`` on the CPU; from CUDA into pinned memory on a copy stream that waits for the
    work producing it, and the host waits for that copy only."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    stream = _copy_stream(tensor.device)
    stream.wait_stream(torch.cuda.current_stream(tensor.device))
    with torch.cuda.stream(stream):
        out = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        out.copy_(tensor, non_blocking=True)
        tensor.record_stream(stream)
    stream.synchronize()
    return out
