"""The pooled decode stage: one actor decodes many jobs' videos, pulled one batch at a time.

A Ray actor cannot hand out a Python generator, so each :meth:`DecodePoolWorker.next` call
returns one batch and the caller's pace is the backpressure. The job's position travels in the
request (``start_index``, the next decode index to emit); the member keeps the open reader of
each job attempt as a cache and continues it when the request is where the reader is, or
reopens the source at the request's index (an exact resume, see ``media``'s reader) when the
job comes without one: after a member died, or when the job moved to another member.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from actors._sessions import SessionCache
from actors.decode import DecodeSpec, DecodeWorker
from actors.messages import FrameBatch, VideoInfo

__all__ = ["BatchMeta", "DecodePoolWorker", "DecodeRequest", "DecodeSession"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodeRequest:
    """One job's decode: what to read, how, and where it is.

    Args:
        job_id: carried into every batch.
        source: path or URL.
        spec: decode and sampling settings.
        start_index: the next decode index to emit (0 for a fresh job).
    """

    job_id: str
    source: str
    spec: DecodeSpec
    start_index: int = 0

    def after(self, meta: BatchMeta) -> DecodeRequest:
        """The request for the batch after the one ``meta`` describes."""
        return replace(self, start_index=meta.next_source_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchMeta:
    """What the coordinator needs to know about a batch without touching its pixels.

    ``next_source_index``: where decoding continues after this batch (the request's
    ``start_index`` for the next one).
    """

    frames: int
    is_last: bool
    n_corrupt: int
    first_source_index: int
    next_source_index: int


class DecodeSession:
    """One job attempt's reader: decodes ``source`` for ``job_id`` from ``start_index``.

    Raises on construction when the source cannot be opened or is over ``spec.limits``
    (:class:`~actors.errors.ResourceLimitError`, from the stream's header before any frame
    is decoded); the job fails, nothing else. :meth:`next` raises it too for a later frame
    over the limit.
    """

    def __init__(self, spec: DecodeSpec, job_id: str, source: str, start_index: int = 0) -> None:
        self.info, self._batches = DecodeWorker(spec).open(job_id, source, start_index=start_index)
        self.position = start_index  # the next decode index this session emits

    def video_info(self) -> VideoInfo:
        """The source's facts (crosses Ray as the dataclass itself)."""
        return self.info

    def next(self) -> tuple[BatchMeta, FrameBatch]:
        """The next batch and its summary. The batch with ``is_last`` ends the session; it is
        empty only when no frame was selected at all. Calling again after it raises
        ``StopIteration``."""
        batch = next(self._batches)
        if len(batch):
            self.position = int(batch.source_index[-1]) + 1
        meta = BatchMeta(
            frames=len(batch),
            is_last=batch.is_last,
            n_corrupt=batch.n_corrupt,
            first_source_index=int(batch.source_index[0]) if len(batch) else -1,
            next_source_index=self.position,
        )
        return meta, batch

    def close(self) -> None:
        """Close the reader (its container and decoder) now rather than when collected."""
        self._batches.close()


class DecodePoolWorker:
    """Decodes the videos of every job bound to it; open readers are kept per attempt key."""

    def __init__(self) -> None:
        # A reader dropped for idling (its job died) closes its container at once.
        self._open: SessionCache[DecodeSession] = SessionCache(on_drop=DecodeSession.close)

    def probe(self, key: str, request: DecodeRequest) -> VideoInfo:
        """Open the source for the attempt ``key`` and return its facts (the reader stays open
        for the first :meth:`next`).

        Raises:
            DecodeError, ResourceLimitError: the source cannot be read or is over the limits;
                the job fails with that line, nothing else.
        """
        with self._open.session(key) as entry:
            _close(entry.value)
            entry.value = _session(request)
            return entry.value.info

    def next(self, key: str, request: DecodeRequest) -> tuple[BatchMeta, FrameBatch]:
        """The batch at ``request.start_index`` and its summary. The batch with ``is_last``
        ends the attempt's reader; it is empty only when no frame was selected at all."""
        with self._open.session(key) as entry:
            if entry.value is None or entry.value.position != request.start_index:
                _close(entry.value)
                entry.value = _session(request)
            meta, batch = entry.value.next()
            if meta.is_last:
                _close(entry.value)
                entry.value = None
            return meta, batch

    def close(self, key: str) -> None:
        """Close and forget the attempt ``key``'s reader."""
        _close(self._open.pop(key))

    def sessions(self) -> int:
        """Job attempts with an open reader here."""
        return len(self._open)


def _close(session: DecodeSession | None) -> None:
    if session is not None:
        session.close()


def _session(request: DecodeRequest) -> DecodeSession:
    return DecodeSession(request.spec, request.job_id, request.source, request.start_index)
