"""Job commands of the CLI: run, submit, serve, status, wait, cancel, list, query."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from actors.groups import MODEL_NAMES
from flows.cmd_jobs import add_queue_commands
from flows.cmd_results import add_result_commands
from flows.cmdutil import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    coordinator_for,
    print_json,
)
from flows.errors import SpecError
from flows.runcmd import run_command
from flows.spec import DENSE_MODES, DETECTOR_MODELS, DETECTORS, TASK_NAMES
from models.detect import DETECTOR_DEVICES
from models.runtime import COMPILE_MODES

__all__ = ["add_job_commands"]


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
    p.add_argument(
        "--keypoints",
        type=int,
        choices=(308, 133, 17),
        help="pose keypoint set (released 133/17: the files of SPEC §8 in a --weights DIR)",
    )
    p.add_argument(
        "--flip-test",
        action="store_true",
        default=None,
        help="pose flip test (the crop and its mirror, averaged), as the official test config",
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
    p.add_argument(
        "--reconnects",
        type=int,
        help="live streams: times a dropped stream is reopened in a row before the job fails "
        "(default 5)",
    )
    p.add_argument(
        "--reconnect-backoff",
        type=float,
        metavar="S",
        help="live streams: seconds before the first reopen, doubled for each next (default 1)",
    )
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
    p.add_argument(
        "--priority",
        type=int,
        help="queue priority (submit): higher is served first, equal ones in submit order",
    )
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
        p.set_defaults(func=fn)
    add_queue_commands(sub, _job_options, _common)  # submit, status, wait (flows/cmd_jobs.py)
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
    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id")
    _common(p)
    p.set_defaults(func=_cmd_cancel)
    ls = sub.add_parser("list", help="jobs, newest first")
    _common(ls)
    ls.add_argument("--state", default=None)
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=_cmd_list)
    add_result_commands(sub, _common)  # query, export (flows/cmd_results.py)
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
