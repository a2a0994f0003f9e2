"""``sapiens-stream run``: one job, driven by this process on Ray, with no job registry.

The job's store is its whole state. ``run`` holds :class:`storage.JobRunLock` for the run, so a
second ``run`` of the same job while this one lives is refused; a run that died leaves its store
``running``, and running the same command again resumes it from its committed frames. A store
that is complete is reported as it is. Redis is for ``submit`` and ``serve`` only: the one
exception is ``run --registry``, the entrypoint of a job submitted to a cluster through its Jobs
API (``submit --address``), which registers the job in the cluster's Redis and heartbeats it, so
``status``/``wait`` there see it like a queued job.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

from flows.cmdutil import EXIT_FAILED, EXIT_OK, print_json, spec_from_args
from flows.errors import SpecError

__all__ = ["run_command"]


class _Progress:
    """Shows the job's frames committed (of those expected once the video is probed),
    frames/s and ETA on stderr as commits land (:mod:`flows.progress`)."""

    def __init__(
        self, job_id: str, *, quiet: bool, plan: Any = None, clock: Any = time.monotonic
    ) -> None:
        from flows.progress import RateMeter, open_display

        self.job_id, self.plan = job_id, plan
        self.display = open_display(quiet=quiet, clock=clock)
        self.meter = RateMeter(clock=clock)
        self.decoded, self.expected = 0, None

    def on_video(self, video: Any) -> None:
        self.expected = self.plan.expected_frames(video) if self.plan is not None else None

    def __call__(self, committed: int, decoded: int, *, last: bool = False) -> None:
        from flows.progress import Snapshot

        self.decoded = max(self.decoded, decoded)
        total = committed if last else self.expected
        self.display.show(
            Snapshot.of(
                self.job_id,
                self.meter,
                done=committed,
                total=max(total, committed) if total is not None else None,
                unit="frames",
                detail=f"{decoded} frames decoded, {committed} committed",
            )
        )

    def end(self) -> None:
        self.display.close()


def run_command(args: argparse.Namespace) -> int:
    """Run the job the arguments describe to its end here; prints its state and summary."""
    from flows.plan import plan_job
    from flows.pool import InferPool, ScalePolicy
    from flows.run import run_on_ray
    from storage import (
        InvalidValueError,
        JobRunLock,
        StoreBusyError,
        check_output_root,
        open_result,
        store_state,
    )

    spec = spec_from_args(args)
    if args.registry:
        return _run_registered(args, spec)
    try:
        check_output_root(spec.output_root)
    except InvalidValueError as e:
        raise SpecError(str(e)) from e
    plan = plan_job(spec, device=args.device)
    out: dict[str, Any] = {"job_id": spec.job_id}
    try:
        # Stdout is the result's JSON alone: what Ray prints while the job runs or its cluster
        # stops (a worker's death as the job's own actors go) goes to stderr.
        with JobRunLock(plan.store_url), contextlib.redirect_stdout(sys.stderr):
            state = store_state(plan.store_url)
            if state is not None and state.status == "failed":
                msg = (
                    f"job {spec.job_id!r} failed in an earlier run (see `sapiens-stream status`);"
                    f" remove {plan.store_url} to run it again"
                )
                raise SpecError(msg)
            if state is not None and state.status == "complete":
                outcome_state, error = "succeeded", None
            else:
                progress = _Progress(spec.job_id, quiet=args.quiet, plan=plan)
                pool = InferPool(ScalePolicy(actor_gpus=args.actor_gpus))
                try:
                    outcome = run_on_ray(
                        plan,
                        progress=progress,
                        pool=pool if spec.placement != "split" else None,
                        resume=state is not None,
                        stall_s=args.stall_timeout_s or None,
                        on_video=progress.on_video,
                    )
                    if outcome.state == "succeeded":  # the last block commits as the job ends
                        decoded = max(progress.decoded, outcome.frames)
                        progress(outcome.frames, decoded, last=True)
                finally:
                    progress.end()
                    pool.shutdown()
                    _stop_ray()
                outcome_state, error = outcome.state, outcome.error
    except StoreBusyError as e:
        raise SpecError(f"job {spec.job_id!r}: {e}; wait for it instead") from e
    out.update(state=outcome_state, error=error)
    if outcome_state == "succeeded":
        out["summary"] = open_result(plan.store_url).summary().as_dict()
    print_json(out)
    return EXIT_OK if outcome_state == "succeeded" else EXIT_FAILED


def _stop_ray() -> None:
    """Leave the Ray cluster (a local one stops) before the result is printed."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _run_registered(args: argparse.Namespace, spec: Any) -> int:
    """Register the job in the registry, outside the queue, and run it here under its lease;
    a job the registry says is running elsewhere or queued for a service is refused."""
    from flows.cmdutil import coordinator_for
    from flows.plan import plan_job
    from flows.pool import ScalePolicy
    from flows.service import JobService, default_worker_id
    from storage import open_result

    coord = coordinator_for(args, detach=False)
    worker_id = default_worker_id("run")
    store = plan_job(spec).store_url
    lease = coord.start_direct(
        spec.to_dict(),
        job_id=spec.job_id,
        worker_id=worker_id,
        meta={"store": store, "submitted_by": "run"},
    )
    if isinstance(lease, tuple):
        status, detail = lease
        if status == "busy":
            raise SpecError(f"job {spec.job_id!r} is running in {detail}; wait for it instead")
        if status == "queued":
            raise SpecError(f"job {spec.job_id!r} is queued for a service ({detail})")
    else:
        JobService(
            coord,
            worker_id=worker_id,
            max_jobs=1,
            device=args.device,
            policy=ScalePolicy(actor_gpus=args.actor_gpus),
            stall_s=args.stall_timeout_s or None,
            trust_weights=True,
        ).run_one(lease)
    record = coord.get(spec.job_id)
    out: dict[str, Any] = {"job_id": spec.job_id, "state": record.state, "error": record.error}
    if record.state == "succeeded":
        out["summary"] = open_result(store).summary().as_dict()
    print_json(out)
    return EXIT_OK if record.state == "succeeded" else EXIT_FAILED
