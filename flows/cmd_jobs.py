"""Queue commands of the CLI: submit (one video, or many: ``flows/batch.py``), status and wait
(one job, several, or ``--all``), with progress on stderr (``flows/progress.py``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from flows.cmdutil import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    coordinator_for,
    print_json,
    spec_from_args,
)
from flows.errors import SpecError
from flows.progress import Display, RateMeter, Row, Snapshot, open_display

__all__ = ["add_queue_commands"]

Options = Callable[[argparse.ArgumentParser], None]
POLL_S = 0.5
_EXPECTED_RETRY_S = 2.0  # how often a running job's store is read for its expected frames


def _cmd_submit(args: argparse.Namespace) -> int:
    from flows.batch import is_batch
    from flows.plan import plan_job

    if is_batch(args.video):
        return _submit_batch(args)
    spec = spec_from_args(args)
    if args.address:
        from flows.remote import submit_ray_job

        if spec.priority:
            msg = (
                f"--priority {spec.priority}: priority orders the queue a `serve` takes jobs "
                f"from; the Ray Jobs API (--address) starts every job at once. Queue it in the "
                f"cluster's Redis instead (submit without --address)"
            )
            raise SpecError(msg)

        print(
            submit_ray_job(args.address, spec, redis_url=args.redis_url, actor_gpus=args.actor_gpus)
        )
        return EXIT_OK
    coord = coordinator_for(args, detach=True)
    sub = coord.submit(
        spec.to_dict(),
        job_id=spec.job_id,
        client_key=args.client_key,
        priority=spec.priority,
        meta={"store": plan_job(spec).store_url, "submitted_by": "submit"},
    )
    print(sub.job_id)
    return EXIT_OK


def _submit_batch(args: argparse.Namespace) -> int:
    """A job per video of a directory, glob or manifest; JSON of what was queued, skipped and
    not queued on stdout, the summary on stderr."""
    from flows.batch import expand_sources, submit_many

    for flag, given in (("--job-id", args.job_id), ("--client-key", args.client_key)):
        if given:
            msg = f"{flag} names one job; a batch derives each video's id (or its manifest line)"
            raise SpecError(msg)
    if args.address:
        raise SpecError("--address submits one video; give a file or URL")
    items = expand_sources(args.video)
    base = spec_from_args(args).to_dict()
    base.pop("job_id")
    coord = coordinator_for(args, detach=True)
    display, meter = open_display(quiet=args.quiet), RateMeter()

    def shown(out: Any) -> None:
        detail = f"{len(out.queued)} queued, {len(out.skipped)} skipped"
        done, failures = out.handled, len(out.failed)
        display.show(
            Snapshot.of(
                "submit", meter, done=done, total=len(items), unit="videos",
                detail=detail, failures=failures,
            )
        )  # fmt: skip

    try:
        outcome = submit_many(coord, base, items, on_item=shown)
    finally:
        display.close()
    for failed in outcome.failed:
        print(f"error: {failed['error']}", file=sys.stderr)
    print(f"submit: {outcome.summary()}", file=sys.stderr)
    print_json(outcome.to_dict())
    return EXIT_BAD_INPUT if outcome.failed else EXIT_OK


def _as_dict(r: Any) -> dict[str, Any]:
    return {
        "job_id": r.job_id,
        "state": r.state,
        "priority": r.priority,
        "attempts": r.attempts,
        "retries": r.retries,
        "owner": r.owner,
        "committed_frames": r.committed_frames,
        "counters": r.counters,
        "cancel_requested": r.cancel_requested,
        "error": r.error,
        "result": r.result,
        "store": r.meta.get("store"),
        "created_ms": r.created_ms,
        "updated_ms": r.updated_ms,
    }


def _record(coord: Any, job_id: str, output_root: str | None = None) -> dict[str, Any]:
    """The job's registry record; for a job the registry never saw (one ``run`` drove), what
    its store under ``output_root`` says."""
    from storage import JobNotFoundError, store_state

    try:
        return _as_dict(coord.get(job_id))
    except JobNotFoundError:
        store = f"{(output_root or '').rstrip('/')}/{job_id}.zarr"
        state = store_state(store) if output_root else None
        if state is None:
            raise
        states = {"complete": "succeeded", "failed": "failed", "running": "running"}
        return {
            "job_id": job_id,
            "state": states.get(state.status, state.status),
            "committed_frames": state.frames,
            "store": store,
            "registry": False,
        }


def _check_ids(args: argparse.Namespace) -> None:
    if bool(args.job_ids) == bool(args.all):
        raise SpecError(f"{args.command}: give job ids or --all, not both nor neither")


def _job_ids(args: argparse.Namespace, coord: Any, *, active: bool) -> list[str]:
    """The ids given, or with ``--all`` every job (``active``: those queued or running)."""
    if args.job_ids:
        return list(dict.fromkeys(args.job_ids))
    if not active:
        return [r.job_id for r in coord.list_jobs(limit=args.limit)]
    states = ("running", "queued")
    return [r.job_id for s in states for r in coord.list_jobs(state=s, limit=args.limit)]


def _cmd_status(args: argparse.Namespace) -> int:
    _check_ids(args)
    coord = coordinator_for(args, detach=False)
    if args.all:
        print_json([_as_dict(r) for r in coord.list_jobs(limit=args.limit)])
        return EXIT_OK
    records = [_record(coord, j, args.output_root) for j in _job_ids(args, coord, active=False)]
    print_json(records[0] if len(args.job_ids) == 1 else records)
    return EXIT_OK


def _cmd_retry(args: argparse.Namespace) -> int:
    """Queue failed or cancelled jobs again; JSON of what was requeued and what was not."""
    from storage import InvalidTransitionError, JobNotFoundError

    _check_ids(args)
    coord = coordinator_for(args, detach=True)
    if args.job_ids:
        ids = list(dict.fromkeys(args.job_ids))
    else:
        states = ("failed", "cancelled")
        ids = [r.job_id for s in states for r in coord.list_jobs(state=s, limit=args.limit)]
    requeued, refused = [], []
    for job_id in ids:
        try:
            requeued.append({"job_id": job_id, "retry": coord.retry(job_id, by="retry")})
        except (JobNotFoundError, InvalidTransitionError) as e:
            refused.append({"job_id": job_id, "error": str(e)})
            print(f"error: {e}", file=sys.stderr)
    print_json({"requeued": requeued, "not_requeued": refused})
    return EXIT_BAD_INPUT if refused else EXIT_OK


def _cmd_wait(args: argparse.Namespace) -> int:
    _check_ids(args)
    coord = coordinator_for(args, detach=False)
    ids = _job_ids(args, coord, active=True)
    watch = JobWatch(coord, ids)
    display = open_display(quiet=args.quiet)
    try:
        finished = watch.until_done(display, timeout_s=args.timeout)
    finally:
        display.close()
    if not finished:
        pending = [j for j, r in watch.records.items() if not r.finished]
        states = ", ".join(f"{j} {watch.records[j].state}" for j in pending[:5])
        more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
        print(f"error: after {args.timeout}s still {states}{more}", file=sys.stderr)
        return EXIT_FAILED
    records = [_as_dict(watch.records[j]) for j in ids]
    print_json(records[0] if len(args.job_ids) == 1 else records)
    return EXIT_OK if all(r["state"] == "succeeded" for r in records) else EXIT_FAILED


def expected_frames(store: str | None) -> int | None:
    """How many frames the job of ``store`` will analyse, from what its store recorded (the
    probed video and the job spec); None before the store exists."""
    from fractions import Fraction

    from flows.plan import plan_job
    from flows.spec import JobSpec
    from media import VideoInfo
    from storage import StorageError, open_result

    if not store:
        return None
    try:
        attrs = open_result(store).attrs
        source = {k: v for k, v in attrs["source"].items() if k != "uri"}
        base = source.get("time_base")
        info = VideoInfo(**{**source, "time_base": Fraction(base) if base else None})
        spec = JobSpec.from_dict(attrs["job"]["spec"])
    except (StorageError, KeyError, TypeError, ValueError):
        return None
    return plan_job(spec).expected_frames(info)


class JobWatch:
    """Polls jobs until all have ended, showing their frames, pace and failures.

    Args:
        coord: the job registry.
        job_ids: the jobs.
        clock, sleep: time (fake ones in tests).
    """

    def __init__(
        self,
        coord: Any,
        job_ids: list[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.coord, self.ids, self.clock, self.sleep = coord, job_ids, clock, sleep
        self.records: dict[str, Any] = {}
        self.expected: dict[str, int | None] = {}
        self._tried: dict[str, float] = {}
        self._ended = -1
        self.meter = RateMeter(clock=clock)

    def until_done(self, display: Display, *, timeout_s: float | None = None) -> bool:
        """Poll until every job has ended (True) or ``timeout_s`` passed (False)."""
        deadline = None if timeout_s is None else self.clock() + timeout_s
        while True:
            display.show(self.poll())
            if all(r.finished for r in self.records.values()):
                return True
            if deadline is not None and self.clock() > deadline:
                return False
            pending = sum(not r.finished for r in self.records.values())
            self.sleep(max(POLL_S, pending / 200))  # at most ~200 job reads a second

    def poll(self) -> Snapshot:
        """Read the jobs not yet ended; what the display shows now."""
        now = self.clock()
        for j in self.ids:
            if j not in self.records or not self.records[j].finished:
                self.records[j] = self.coord.get(j)
            r = self.records[j]
            if r.finished:
                self.expected[j] = r.committed_frames
            elif self._expected_unknown(r, now):
                self._tried[j] = now
                self.expected[j] = expected_frames(r.meta.get("store"))
        return self._snapshot()

    def _expected_unknown(self, r: Any, now: float) -> bool:
        """A running job whose expected frames are unknown, not read in the last seconds."""
        if r.state != "running" or self.expected.get(r.job_id) is not None:
            return False
        return now - self._tried.get(r.job_id, -1e9) >= _EXPECTED_RETRY_S

    def _snapshot(self) -> Snapshot:
        records = [self.records[j] for j in self.ids]
        ended = sum(r.finished for r in records)
        failed = sum(r.state in ("failed", "cancelled") for r in records)
        running = sum(r.state == "running" for r in records)
        known = [e for e in (self.expected.get(j) for j in self.ids) if e is not None]
        total = None
        if known:  # jobs not probed yet count as the mean of those that are
            total = sum(known) + round(sum(known) / len(known)) * (len(records) - len(known))
        done = sum(r.committed_frames for r in records)
        rows = tuple(
            Row(key=r.job_id, done=r.committed_frames, total=self.expected.get(r.job_id))
            for r in records
            if r.state == "running"
        )
        milestone, self._ended = ended != self._ended, ended
        queued = len(records) - ended - running
        detail = f"{ended}/{len(records)} jobs done, {running} running, {queued} queued"
        return Snapshot.of(
            "wait", self.meter, done=done, total=total if total is None else max(total, done),
            unit="frames", detail=detail, failures=failed, rows=rows, milestone=milestone,
        )  # fmt: skip


def add_queue_commands(
    sub: argparse._SubParsersAction, job_options: Options, common: Options
) -> None:
    """Register submit, status, retry and wait (``job_options``, ``common``: commands.py's)."""
    p = sub.add_parser(
        "submit",
        help="queue a job for a running `serve` and print its id; a directory, glob or "
        "manifest.jsonl queues a job per video (resubmitting skips those queued, running or "
        "done and queues failed or cancelled ones again)",
    )
    job_options(p)
    common(p)
    p.add_argument("--client-key", default=None, help="idempotency key: same key, same job")
    p.add_argument(
        "--address",
        default=None,
        help="Ray Jobs API of a cluster (http://HEAD:8265): run the job there as a Ray "
        "job instead of queueing it in Redis",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (batches)")
    p.set_defaults(func=_cmd_submit)
    for name, fn, what in (
        ("status", _cmd_status, "state of jobs"),
        (
            "retry",
            _cmd_retry,
            "queue failed or cancelled jobs again; each continues its store from the frames "
            "it committed",
        ),
        (
            "wait",
            _cmd_wait,
            "wait for jobs to end, with progress on stderr; exit 0 if all succeeded",
        ),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("job_ids", nargs="*", metavar="JOB")
        p.add_argument(
            "--all",
            action="store_true",
            help={
                "status": "every job",
                "retry": "every failed or cancelled job",
                "wait": "every job queued or running now",
            }[name],
        )
        p.add_argument("--limit", type=int, default=10_000, help="most jobs --all takes")
        common(p)
        if name == "wait":
            p.add_argument("--timeout", type=float, default=None)
            p.add_argument("--quiet", action="store_true", help="no progress on stderr")
        p.set_defaults(func=fn)
