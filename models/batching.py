"""Dynamic batching: many callers, few fixed-size forwards.

A shared Sapiens actor serves every running job. Each call brings the crops of one frame batch
of one job -- often fewer than the model's batch, so running each call alone would waste most
of every padded forward. :class:`DynamicBatcher` collects the crops of concurrent calls into
forwards of at most ``batch_size`` crops:

* a forward starts as soon as ``batch_size`` crops wait, or when no other call is still
  preparing crops (waiting could not fill it), or when the oldest waiting crop has waited
  ``deadline_s`` -- a lone job is never held back longer than that;
* crops are taken from the callers' keys (jobs) in turn, the key with the fewest crops in the
  forward first, oldest request first within a key, so a job with many persons cannot starve
  one with few; a request larger than a forward is served over several forwards;
* outputs are split back per request in order, so a caller sees exactly the tensor it would
  have got from running its crops alone (every stage of the model is per-sample);
* a request may name the outputs it wants (``want``: a job's tasks); a forward computes the
  union of what its requests want, and each request gets back only its own.

The forwards run on one thread of the batcher, one at a time, which is also what a single
accelerator wants. Pure Python and torch: no Ray here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["BatcherClosedError", "BatcherStats", "DynamicBatcher", "output_task"]

Forward = Callable[[Tensor, frozenset[str] | None], dict[str, Tensor]]
"""images (N, C, H, W), wanted outputs (None: all) -> ``{name: (N, ...)}``."""


class BatcherClosedError(RuntimeError):
    """The batcher was closed while a request waited."""


@dataclass(slots=True, eq=False)
class _Request:
    key: str
    images: Tensor
    want: frozenset[str] | None
    arrived: float
    taken: int = 0
    parts: list[tuple[int, dict[str, Tensor]]] = field(default_factory=list)
    done_rows: int = 0
    error: BaseException | None = None
    event: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return int(self.images.shape[0])

    @property
    def left(self) -> int:
        return self.rows - self.taken


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since the batcher started.

    Attributes:
        forwards: forwards run.
        crops: real crops run.
        slots: crops the forwards could have held (``forwards * batch_size``).
        mixed_forwards: forwards holding crops of more than one key.
        busy_s: seconds spent inside forwards.
        wait_s: summed seconds requests waited before their first crop ran.
        requests: requests served.
        up_s: seconds since the batcher started.
    """

    forwards: int
    crops: int
    slots: int
    mixed_forwards: int
    busy_s: float
    wait_s: float
    requests: int
    up_s: float

    @property
    def fill(self) -> float:
        """Mean fraction of a forward holding real crops."""
        return self.crops / self.slots if self.slots else 0.0

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.up_s if self.up_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "forwards": self.forwards,
            "crops": self.crops,
            "slots": self.slots,
            "mixed_forwards": self.mixed_forwards,
            "busy_s": round(self.busy_s, 4),
            "wait_s": round(self.wait_s, 4),
            "requests": self.requests,
            "up_s": round(self.up_s, 4),
            "fill": round(self.fill, 4),
            "busy_fraction": round(self.busy_fraction, 4),
        }


def output_task(name: str) -> str:
    """The task an output belongs to: ``pointmap_scale`` (an extra output of the pointmap
    head) is the pointmap's; task names hold no underscore."""
    return name.partition("_")[0]


class DynamicBatcher:
    """Runs ``forward`` on crops gathered from concurrent callers.

    Args:
        forward: images (N, C, H, W) and the wanted outputs (None: all) -> ``{name: (N, ...)}``;
            called with 1..batch_size rows.
        batch_size: most crops per forward.
        deadline_s: longest a crop waits for company before its forward starts anyway.

    Callers open a :meth:`session` before they start preparing crops: while a session has not
    submitted, the batcher may wait for it (up to the deadline) instead of starting a
    half-empty forward.
    """

    def __init__(self, forward: Forward, *, batch_size: int, deadline_s: float = 0.01) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if deadline_s < 0:
            raise ValueError(f"deadline_s must be >= 0, got {deadline_s}")
        self.forward, self.batch_size, self.deadline_s = forward, batch_size, deadline_s
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._preparing = 0
        self._served: dict[str, int] = {}  # crops run per key with requests queued
        self._closed = False
        self._started = time.perf_counter()
        self._n = {"forwards": 0, "crops": 0, "mixed": 0, "requests": 0}
        self._busy_s = self._wait_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()

    # -- callers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(
        self, key: str = "", want: frozenset[str] | None = None
    ) -> Iterator[Callable[[Tensor], dict[str, Tensor]]]:
        """Announce a request on its way; yields the function that submits it,
        ``submit(images, want=None)`` (``want``: the outputs that submission needs; default the
        session's, None: all). The first submission ends the announcement; a caller with
        images of several kinds (person crops for one head, whole frames for others) may
        submit more, each a request of its own.

        Leaving the block without submitting (no persons, an error) withdraws the announcement.
        """
        state = {"open": True}

        def close() -> None:  # lock held
            if state["open"]:
                state["open"] = False
                self._preparing -= 1
                self._cond.notify_all()

        def submit(images: Tensor, wanted: frozenset[str] | None = None) -> dict[str, Tensor]:
            return self._submit(
                images, key, want if wanted is None else wanted, close if state["open"] else None
            )

        with self._cond:
            self._preparing += 1
        try:
            yield submit
        finally:
            with self._cond:
                close()

    def __call__(
        self, images: Tensor, *, key: str = "", want: frozenset[str] | None = None
    ) -> dict[str, Tensor]:
        """Outputs of ``forward`` for ``images``, computed in shared forwards (blocks)."""
        return self._submit(images, key, want, None)

    def _submit(
        self,
        images: Tensor,
        key: str,
        want: frozenset[str] | None,
        on_enqueue: Callable[[], None] | None,
    ) -> dict[str, Tensor]:
        if images.shape[0] == 0:
            raise ValueError("expected at least one image")
        req = _Request(key=key, images=images, want=want, arrived=time.perf_counter())
        with self._cond:
            if on_enqueue is not None:
                on_enqueue()
            if self._closed:
                raise BatcherClosedError("the batcher is closed")
            if key not in self._served:  # a newcomer starts level with the least served
                self._served[key] = min(self._served.values(), default=0)
            self._queue.append(req)
            self._cond.notify_all()
        req.event.wait()
        if req.error is not None:
            raise req.error
        parts = [out for _, out in sorted(req.parts, key=lambda p: p[0])]
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def stats(self) -> BatcherStats:
        with self._cond:
            n = dict(self._n)
            busy, wait = self._busy_s, self._wait_s
        return BatcherStats(
            forwards=n["forwards"],
            crops=n["crops"],
            slots=n["forwards"] * self.batch_size,
            mixed_forwards=n["mixed"],
            busy_s=busy,
            wait_s=wait,
            requests=n["requests"],
            up_s=time.perf_counter() - self._started,
        )

    def close(self) -> None:
        """Stop the thread; waiting and later requests fail with ``BatcherClosedError``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    # -- the forward thread ----------------------------------------------------------------------
    def _pending(self) -> int:
        return sum(r.left for r in self._queue)

    def _ready(self) -> bool:
        """True when a forward should start now (called with the lock held, queue non-empty)."""
        if self._pending() >= self.batch_size or self._preparing == 0:
            return True
        return time.perf_counter() >= self._queue[0].arrived + self.deadline_s

    def _gather(self) -> list[tuple[_Request, int, int]] | None:
        """Wait for work and take one forward's worth: (request, first row, rows)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._queue and self._ready():
                    break
                timeout = None
                if self._queue:
                    timeout = max(
                        0.0, self._queue[0].arrived + self.deadline_s - time.perf_counter()
                    )
                self._cond.wait(timeout)
            return self._take()

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Fill one forward, the least served key first (lock held)."""
        room, keys = self.batch_size, set()
        chosen: list[tuple[_Request, int, int]] = []
        while room > 0:
            open_reqs = [r for r in self._queue if r.left > 0]
            if not open_reqs:
                break
            req = min(open_reqs, key=lambda r: (self._served[r.key], r.arrived))
            rows = min(room, req.left)
            if req.taken == 0:
                self._wait_s += time.perf_counter() - req.arrived
            chosen.append((req, req.taken, rows))
            req.taken += rows
            self._served[req.key] += rows
            keys.add(req.key)
            room -= rows
        self._queue = deque(r for r in self._queue if r.left > 0)
        waiting = {r.key for r in self._queue}
        for key in [k for k in self._served if k not in waiting and k not in keys]:
            del self._served[key]
        self._n["forwards"] += 1
        self._n["crops"] += self.batch_size - room
        self._n["mixed"] += len(keys) > 1
        return chosen

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                chosen = self._gather()
                if chosen is None:
                    break
                self._run(chosen)
        with self._cond:
            failed = list(self._queue)
            self._queue.clear()
        for req in failed:
            req.error = BatcherClosedError("the batcher was closed")
            req.event.set()

    def _run(self, chosen: list[tuple[_Request, int, int]]) -> None:
        images = torch.cat([r.images[start : start + rows] for r, start, rows in chosen])
        wants = [r.want for r, _, _ in chosen]
        want = None if None in wants else frozenset().union(*wants)
        t0 = time.perf_counter()
        try:
            outputs = self.forward(images, want)
        except BaseException as e:  # every caller of this forward gets the error
            with self._cond:
                for req, _, _ in chosen:
                    if req in self._queue:  # rows still queued would run for nobody
                        self._queue.remove(req)
            for req, _, _ in chosen:
                req.error = e
                req.event.set()
            return
        finally:
            with self._cond:
                self._busy_s += time.perf_counter() - t0
        offset = 0
        for req, start, rows in chosen:
            mine = {
                k: v[offset : offset + rows]
                for k, v in outputs.items()
                if req.want is None or output_task(k) in req.want
            }
            req.parts.append((start, mine))
            offset += rows
            req.done_rows += rows
            if req.done_rows == req.rows:
                with self._cond:
                    self._n["requests"] += 1
                req.event.set()
