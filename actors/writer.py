"""The single writer of a job's result store (wraps ``storage.Writer``).

``WriterStage`` writes one job's store; ``WriterWorker`` is the pooled actor that serves every
job, one ``WriterStage`` per job attempt. The commit state that matters (watermark, resume
state, fencing token) is in the store itself, so a job whose writer member died resumes on
another member from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors._sessions import SessionCache
from actors.errors import WriterSessionError
from storage import FrameResult, ModelProvenance, ResumeState, StoreSpec, Writer

__all__ = ["StoreRequest", "WriterSessionError", "WriterStage", "WriterWorker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreRequest:
    """What a job asks of the writer stage: the store to create, or to resume.

    Args:
        url: store location.
        spec: the store's layout.
        job: job facts for the store's attributes.
        source: source video facts.
        models: the model's provenance, one entry per checkpointed part.
        resume: continue an existing running store instead of creating one.
        fence: the job claim's fencing token; the store refuses this writer once a claim
            with a larger token resumed it (``StaleOwnerError``). None: unfenced (local use).
    """

    url: str
    spec: StoreSpec
    job: Mapping[str, Any]
    source: Mapping[str, Any]
    models: Sequence[ModelProvenance | Mapping[str, Any]]
    resume: bool = False
    fence: int | None = None


class WriterStage:
    """Creates (or resumes) the store a :class:`StoreRequest` names and commits results in
    frame order."""

    def __init__(self, request: StoreRequest) -> None:
        r = request
        self.url = r.url
        self._checkpoints: list[ResumeState] = []
        if r.resume:
            self.writer = Writer.resume(r.url, fence=r.fence)
        else:
            self.writer = Writer.create(
                r.url, r.spec, job=r.job, source=r.source, models=r.models, fence=r.fence
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


class WriterWorker:
    """The pooled writer: one open store per job attempt (``key``), each used under its lock,
    so the commits of different jobs run side by side."""

    def __init__(self) -> None:
        self._stores: SessionCache[WriterStage] = SessionCache()

    def open(self, key: str, request: StoreRequest) -> int:
        """Create (or resume) the store of the attempt ``key``; returns its watermark."""
        with self._stores.session(key) as entry:
            entry.value = WriterStage(request)
            return entry.value.watermark()

    def add(
        self, key: str, results: Sequence[FrameResult], checkpoint: ResumeState | None = None
    ) -> int:
        """:meth:`WriterStage.add` for the attempt ``key``."""
        with self._stores.session(key) as entry:
            return self._stage(key, entry.value).add(results, checkpoint)

    def finalize(self, key: str, timings: Mapping[str, float] | None = None) -> int:
        """Commit the tail and mark the store complete; the attempt's session ends."""
        with self._stores.session(key) as entry:
            frames = self._stage(key, entry.value).finalize(timings)
            entry.value = None
            return frames

    def fail(self, key: str, reason: str) -> None:
        """Mark the attempt's store failed (a no-op when this member never opened it)."""
        with self._stores.session(key) as entry:
            if entry.value is not None:
                entry.value.fail(reason)

    def close(self, key: str) -> None:
        """Forget the attempt ``key`` (whatever state it is in)."""
        self._stores.pop(key)

    def sessions(self) -> int:
        """Job attempts with an open store here."""
        return len(self._stores)

    @staticmethod
    def _stage(key: str, stage: WriterStage | None) -> WriterStage:
        if stage is None:
            msg = f"writer session {key!r} is not open on this writer"
            raise WriterSessionError(msg)
        return stage
