"""The drive loop of one job attempt: decode -> persons -> Sapiens -> writer, bounded in flight.

Pixels never pass through the driving process: it holds object references and small batch
summaries only. At most ``max_in_flight`` batches are between decode and commit, so memory stays
flat however long the video. Every wait goes through the job's :class:`~flows.watch.Watchdog`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.metrics import metric
from flows.plan import JobPlan
from flows.topology import JobActors
from flows.watch import Watchdog

__all__ = ["Progress", "drive"]

Progress = Callable[[int, int], None]
"""Called with (committed frames, decoded frames) as commits land."""


def _infer(plan: JobPlan, actors: JobActors, infer: Any, args: tuple[Any, ...]) -> Any:
    """Reference to one batch's frame results: one fused call on ``infer``, or backbone ->
    heads -> post."""
    if actors.post is None:
        request = {"tasks": plan.infer.tasks, "dense_mode": plan.infer.dense_mode}
        return infer.__call__.remote(*args, job=plan.spec.job_id, **request)
    features = actors.infer.__call__.remote(*args)
    outputs = [actors.heads[t].__call__.remote(features) for t in plan.spec.tasks]
    return actors.post.__call__.remote(features, *outputs)


def drive(
    plan: JobPlan,
    actors: JobActors,
    *,
    max_in_flight: int,
    progress: Progress | None,
    watch: Watchdog,
) -> int:
    """Run the attempt's batches through its actors until the source ends; returns the frames
    decoded. Frames below the store's watermark are decoded and tracked (the tracker needs
    them) but neither analysed nor written again.

    The job's state travels with its calls: each decode request carries the next decode index,
    and each person call takes the tracker state the previous one returned (by reference, so
    it never passes through this process) and returns the next, which the writer saves with
    the store once the watermark reaches it.
    """
    import ray

    writer, key = actors.writer, actors.key
    watermark = actors.watermark
    index, pending, done_frames = actors.first_index, [], watermark
    request, state, infer = actors.decode_from, actors.resume, actors.infer
    tags = {"job": plan.spec.job_id}
    while True:
        watch.check_stop()
        meta_ref, batch_ref = actors.decode.next.options(num_returns=2).remote(key, request)
        meta = watch.get(meta_ref, "the next decoded batch")
        request = request.after(meta)
        if meta.frames:
            metric("frames_decoded").inc(meta.frames, tags=tags)
        if meta.n_corrupt:
            metric("frames_corrupt").inc(meta.n_corrupt, tags=tags)
        if meta.frames:
            persons_ref, state = actors.persons.__call__.options(num_returns=2).remote(
                batch_ref, actors.person_request, state
            )
            if index + meta.frames > watermark:
                if actors.reroute is not None:
                    infer = actors.reroute(infer)
                args = (batch_ref, persons_ref, index, actors.out_size)
                pending.append(writer.add.remote(key, _infer(plan, actors, infer, args), state))
            index += meta.frames
        while len(pending) > max_in_flight or (meta.is_last and pending):
            ready, pending = watch.wait(pending, "a batch to be analysed and committed")
            committed = max(done_frames, ray.get(ready[0]))
            if committed > done_frames:
                metric("frames_committed").inc(committed - done_frames, tags=tags)
            done_frames = committed
            if progress:
                progress(done_frames, index)
        if meta.is_last:
            return index
