"""``WriterStage``: the single writer of one job's result store (wraps ``storage.Writer``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage import FrameResult, ResumeState, StoreSpec, Writer

__all__ = ["WriterStage"]


class WriterStage:
    """Creates (or resumes) a store and commits results in frame order.

    Args:
        url: store location.
        spec: the store's layout.
        job: job facts for the store's attributes.
        source: source video facts.
        models: model facts (name, task, checkpoint_sha256, random_weights).
        resume: continue an existing running store instead of creating one.
        fence: the job claim's fencing token; the store refuses this writer once a claim
            with a larger token resumed it (``StaleOwnerError``). None: unfenced (local use).
    """

    def __init__(
        self,
        url: str,
        spec: StoreSpec,
        *,
        job: Mapping[str, Any],
        source: Mapping[str, Any],
        models: Sequence[Mapping[str, Any]],
        resume: bool = False,
        fence: int | None = None,
    ) -> None:
        self.url = url
        self._checkpoints: list[ResumeState] = []
        if resume:
            self.writer = Writer.resume(url, fence=fence)
        else:
            self.writer = Writer.create(
                url, spec, job=job, source=source, models=models, fence=fence
            )

    def watermark(self) -> int:
        return self.writer.watermark

    def checkpoint(self) -> ResumeState | None:
        """The resume state saved with the store, or None."""
        return self.writer.checkpoint

    def add(self, results: Sequence[FrameResult], checkpoint: ResumeState | None = None) -> int:
        """Accept results in any order; returns the commit watermark (frames final).

        ``checkpoint``: the job's resume state once frames ``0 .. checkpoint["frames"] - 1``
        are final; it is saved with the store as soon as the watermark reaches it.
        """
        for r in results:
            self.writer.add(r)
        if checkpoint is not None:
            self._checkpoints.append(checkpoint)
        ready = [c for c in self._checkpoints if c.frames <= self.writer.watermark]
        if ready:
            newest = max(ready, key=lambda c: c.frames)
            saved = self.writer.checkpoint
            if saved is None or newest.frames > saved.frames:
                self.writer.save_checkpoint(newest)
            self._checkpoints = [c for c in self._checkpoints if c.frames > newest.frames]
        return self.writer.watermark

    def finalize(self, timings: Mapping[str, float] | None = None) -> int:
        """Commit the tail, mark the store complete; returns the frame count."""
        return self.writer.finalize(timings=timings)

    def fail(self, reason: str) -> None:
        self.writer.mark_failed(reason)
