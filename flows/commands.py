"""Job commands of the CLI: run, submit, serve, status, wait, cancel, list, query."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from actors.groups import MODEL_NAMES
from flows.cmdutil import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    coordinator_for,
    print_json,
    spec_from_args,
)
from flows.errors import SpecError
from flows.runcmd import run_command
from flows.spec import DENSE_MODES, DETECTOR_MODELS, DETECTORS, TASK_NAMES
from models.detect import DETECTOR_DEVICES
from models.runtime import COMPILE_MODES

__all__ = ["add_job_commands"]


def _cmd_submit(args: argparse.Namespace) -> int:
    from flows.plan import plan_job

    spec = spec_from_args(args)
    if args.address:
        from flows.remote import submit_ray_job

        print(
            submit_ray_job(args.address, spec, redis_url=args.redis_url, actor_gpus=args.actor_gpus)
        )
        return EXIT_OK
    coord = coordinator_for(args, detach=True)
    sub = coord.submit(
        spec.to_dict(),
        job_id=spec.job_id,
        client_key=args.client_key,
        meta={"store": plan_job(spec).store_url, "submitted_by": "submit"},
    )
    print(sub.job_id)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from flows.pool import ScalePolicy, serve_defaults
    from flows.service import JobService

    max_jobs, max_actors = serve_defaults(args.max_jobs, args.max_actors)
    try:
        policy = ScalePolicy(
            min_actors=args.min_actors,
            max_actors=max_actors,
            idle_s=args.actor_idle_s,
            target_drain_s=args.target_drain_s,
            actor_gpus=args.actor_gpus,
        )
    except ValueError as e:
        raise SpecError(f"serve: {e}") from e
    from models import WeightsPolicy

    weights = WeightsPolicy(
        allowed_dirs=tuple(Path(d) for d in args.weights_dir),
        allowed_hub_orgs=tuple(args.hub_org or ("facebook",)),
    )
    coord = coordinator_for(args, detach=True)
    JobService(
        coord,
        max_jobs=max_jobs,
        device=args.device,
        address=args.address,
        policy=policy,
        scale_interval_s=args.scale_interval_s,
        stall_s=args.stall_timeout_s or None,
        weights_policy=weights,
    ).serve()
    return EXIT_OK


def _cmd_workers(args: argparse.Namespace) -> int:
    print_json(coordinator_for(args, detach=False).workers())
    return EXIT_OK


def _record(coord: Any, job_id: str, output_root: str | None = None) -> dict[str, Any]:
    """The job's registry record; for a job the registry never saw (one ``run`` drove), what
    its store under ``output_root`` says."""
    from storage import JobNotFoundError, store_state

    try:
        r = coord.get(job_id)
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
    return {
        "job_id": r.job_id,
        "state": r.state,
        "attempts": r.attempts,
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


def _cmd_status(args: argparse.Namespace) -> int:
    print_json(_record(coordinator_for(args, detach=False), args.job_id, args.output_root))
    return EXIT_OK


def _cmd_wait(args: argparse.Namespace) -> int:
    from storage import TERMINAL_STATES

    coord = coordinator_for(args, detach=False)
    deadline = time.monotonic() + args.timeout if args.timeout else None
    while (state := coord.get(args.job_id).state) not in TERMINAL_STATES:
        if deadline is not None and time.monotonic() > deadline:
            print(f"error: job {args.job_id} still {state} after {args.timeout}s", file=sys.stderr)
            return EXIT_FAILED
        time.sleep(0.5)
    print_json(_record(coord, args.job_id))
    return EXIT_OK if state == "succeeded" else EXIT_FAILED


def _cmd_cancel(args: argparse.Namespace) -> int:
    print(coordinator_for(args, detach=False).cancel(args.job_id))
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    coord = coordinator_for(args, detach=False)
    print_json(
        [
            {
                "job_id": r.job_id,
                "state": r.state,
                "committed_frames": r.committed_frames,
                "created_ms": r.created_ms,
            }
            for r in coord.list_jobs(state=args.state, limit=args.limit)
        ]
    )
    return EXIT_OK


def _cmd_query(args: argparse.Namespace) -> int:
    from storage import open_result

    reader = open_result(args.store)
    if args.frame is not None:
        f = reader.persons(args.frame, args.frame + 1)
        print_json(
            {
                "frame": args.frame,
                "track_id": f.track_id.tolist(),
                "box_xyxy": f.box_xyxy.tolist(),
                "score": f.score.tolist(),
            }
        )
    elif args.track is not None:
        t = reader.track(args.track)
        print_json({"track_id": args.track, "frames": t.frames.tolist()})
    else:
        print_json(reader.summary().as_dict())
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    from flows.render import render

    print(render(args.store, args.out, source=args.source, frame=args.frame, height=args.height))
    return EXIT_OK


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file or URL")
    p.add_argument("--spec", help="JSON job spec; flags override it")
    p.add_argument("--spec-json", help="the JSON job spec itself (instead of --spec FILE)")
    p.add_argument("--job-id")
    p.add_argument("--tasks", help=f"comma list of {','.join(TASK_NAMES)}")
    p.add_argument(
        "--model",
        choices=MODEL_NAMES,
        help="Sapiens size, or sapiens2-<size> (tiny, sapiens2-tiny: random weights)",
    )
    p.add_argument("--weights", help="'hub' or a directory of checkpoint files")
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        help="torch.compile the model (alone: default mode; reduce-overhead: CUDA graphs)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="convolutions in channels-last memory order",
    )
    p.add_argument("--detector", choices=DETECTORS)
    p.add_argument("--detector-model", choices=DETECTOR_MODELS, help="RT-DETR variant")
    p.add_argument(
        "--detector-weights",
        help="RT-DETR checkpoint (published layout): a file or hf://owner/repo/file; "
        "default: kornia's download",
    )
    p.add_argument("--detector-input-size", type=int, help="RT-DETR input side (multiple of 32)")
    p.add_argument(
        "--detector-device",
        choices=DETECTOR_DEVICES,
        help="where RT-DETR runs (auto: on the GPU share the person stage gets on GPU clusters)",
    )
    p.add_argument("--score-thr", type=float, help="lowest person score the detector keeps")
    p.add_argument("--nms-iou", type=float, help="box overlap above which the weaker is dropped")
    p.add_argument("--boxes", help="JSON file: {source frame index: [[x1,y1,x2,y2], ...]}")
    p.add_argument("--stride", type=int)
    p.add_argument("--fps", type=float)
    p.add_argument("--start", type=float)
    p.add_argument("--end", type=float)
    p.add_argument("--max-side", type=int, help="downscale dense outputs to this longer side")
    p.add_argument(
        "--reduced-decode",
        action="store_true",
        default=None,
        help="decode whole-frame dense jobs without pose at the smallest size that loses "
        "nothing they keep (boxes then in decoded pixels; see JobSpec.reduced_decode)",
    )
    p.add_argument(
        "--dense-mode",
        choices=DENSE_MODES,
        help="seg/depth/normal on person crops (default) or on the whole frame",
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--actor-gpus", type=float, default=None, help="GPUs of the Sapiens actor")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-root",
        default=os.environ.get("SAPIENS_STREAM_OUTPUT_ROOT", "out/results"),
        help="where stores (and the embedded Redis data) live (default: "
        "SAPIENS_STREAM_OUTPUT_ROOT, else out/results); s3://... needs s3fs",
    )
    p.add_argument(
        "--redis-url",
        default=None,
        help="Redis URL (default: SAPIENS_STREAM_REDIS_URL, REDIS_URL, or embedded)",
    )


def _stall_option(p: argparse.ArgumentParser) -> None:
    from flows.watch import DEFAULT_STALL_S

    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=DEFAULT_STALL_S,
        help=f"fail a job that makes no progress for this long (default {DEFAULT_STALL_S:g}; "
        "0: never)",
    )


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    """Register the job commands on the CLI's subparsers."""
    specs = [
        ("run", "run one job end to end here and print its summary", run_command, True),
        ("submit", "queue a job for a running `serve`; prints the job id", _cmd_submit, True),
    ]
    for name, help_text, fn, job in specs:
        p = sub.add_parser(name, help=help_text)
        if job:
            _job_options(p)
        _common(p)
        if name == "run":
            p.add_argument("--device", default=None, help="cpu|cuda (default: automatic)")
            p.add_argument("--quiet", action="store_true", help="no progress on stderr")
            p.add_argument(
                "--registry",
                action="store_true",
                help="register the job in Redis and heartbeat it (what `submit --address` runs "
                "on the cluster); default: no Redis, the store is the job's state",
            )
            _stall_option(p)
        else:
            p.add_argument("--client-key", default=None, help="idempotency key: same key, same job")
            p.add_argument(
                "--address",
                default=None,
                help="Ray Jobs API of a cluster (http://HEAD:8265): run the job there as a Ray "
                "job instead of queueing it in Redis",
            )
        p.set_defaults(func=fn)
    serve = sub.add_parser("serve", help="consume the queue, run jobs on Ray")
    _common(serve)
    serve.add_argument(
        "--max-jobs",
        type=int,
        default=None,
        help="jobs run at once (default: 8 per GPU of this machine, at least 4)",
    )
    serve.add_argument("--device", default=None, help="cpu|cuda (default: where each actor runs)")
    serve.add_argument("--address", default=None, help="Ray cluster (default: RAY_ADDRESS/local)")
    serve.add_argument("--min-actors", type=int, default=0, help="Sapiens actors kept per model")
    serve.add_argument(
        "--max-actors",
        type=int,
        default=None,
        help="most Sapiens actors per model (default: the GPUs of this machine, at least 1)",
    )
    serve.add_argument(
        "--actor-idle-s", type=float, default=300.0, help="remove actors idle this long"
    )
    serve.add_argument(
        "--target-drain-s",
        type=float,
        default=300.0,
        help="scale out until the backlog would be done within this time",
    )
    serve.add_argument(
        "--actor-gpus",
        type=float,
        default=None,
        help="GPUs per Sapiens actor (default: 1 if a GPU is visible, else 0; say 1 on a "
        "cluster whose GPU nodes start on demand)",
    )
    serve.add_argument("--scale-interval-s", type=float, default=2.0)
    _stall_option(serve)
    serve.add_argument(
        "--weights-dir",
        action="append",
        default=[],
        help="a directory jobs may load checkpoints from (repeatable; default: only the "
        "local Hugging Face cache)",
    )
    serve.add_argument(
        "--hub-org",
        action="append",
        default=None,
        help="a hub organisation jobs may load checkpoints from (repeatable; default: facebook)",
    )
    serve.set_defaults(func=_cmd_serve)
    workers = sub.add_parser("workers", help="live serve processes, their actors and load")
    _common(workers)
    workers.set_defaults(func=_cmd_workers)
    for name, fn in (("status", _cmd_status), ("wait", _cmd_wait), ("cancel", _cmd_cancel)):
        p = sub.add_parser(name, help=f"{name} a job")
        p.add_argument("job_id")
        _common(p)
        if name == "wait":
            p.add_argument("--timeout", type=float, default=None)
        p.set_defaults(func=fn)
    ls = sub.add_parser("list", help="jobs, newest first")
    _common(ls)
    ls.add_argument("--state", default=None)
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_cmd_list)
    q = sub.add_parser("query", help="read a result store (JSON)")
    q.add_argument("store")
    q.add_argument("--frame", type=int, default=None)
    q.add_argument("--track", type=int, default=None)
    q.set_defaults(func=_cmd_query)
    r = sub.add_parser("render", help="overlay a store on its video (.mp4) or one frame (.png)")
    r.add_argument("store")
    r.add_argument("--out", required=True)
    r.add_argument("--source", default=None, help="the video (default: the one recorded)")
    r.add_argument("--frame", type=int, default=None)
    r.add_argument("--height", type=int, default=360)
    r.set_defaults(func=_cmd_render)


def handle_errors(fn: Any, args: argparse.Namespace) -> int:
    """Run a command; bad input is exit code 2 with a one-line error."""
    from actors.errors import DecodeError
    from models.errors import ModelError
    from storage import StorageError

    bad_input = (SpecError, StorageError, ModelError, DecodeError, FileNotFoundError)
    try:
        return int(fn(args))
    except (*bad_input, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
