"""``DecodeSession``: a pull-based decode stage (one per running job).

A Ray actor cannot hand out a Python generator, so the session keeps the decoder's iterator
and returns one batch per :meth:`next` call; the caller's pace is the backpressure.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.decode import DecodeSpec, DecodeWorker
from actors.messages import FrameBatch, VideoInfo

__all__ = ["BatchMeta", "DecodeSession"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchMeta:
    """What the coordinator needs to know about a batch without touching its pixels."""

    frames: int
    is_last: bool
    n_corrupt: int
    first_source_index: int


class DecodeSession:
    """Decodes ``source`` for ``job_id`` from ``start_index`` (decode order).

    Raises on construction when the source cannot be opened or is over ``spec.limits``
    (:class:`~actors.errors.ResourceLimitError`, from the stream's header before any frame
    is decoded); the job fails, nothing else. :meth:`next` raises it too for a later frame
    over the limit.
    """

    def __init__(self, spec: DecodeSpec, job_id: str, source: str, start_index: int = 0) -> None:
        worker = DecodeWorker(spec)
        self.info = worker.probe(source)
        self._batches = worker.batches(job_id, source, start_index=start_index)

    def video_info(self) -> VideoInfo:
        """The source's facts (crosses Ray as the dataclass itself)."""
        return self.info

    def next(self) -> tuple[BatchMeta, FrameBatch]:
        """The next batch and its summary. The batch with ``is_last`` ends the session; it is
        empty only when no frame was selected at all. Calling again after it raises
        ``StopIteration``."""
        batch = next(self._batches)
        meta = BatchMeta(
            frames=len(batch),
            is_last=batch.is_last,
            n_corrupt=batch.n_corrupt,
            first_source_index=int(batch.source_index[0]) if len(batch) else -1,
        )
        return meta, batch
