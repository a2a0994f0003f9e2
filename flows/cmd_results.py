"""Result commands of the CLI: ``query`` (a store's people, JSON or CSV) and ``export`` (COCO
keypoint results, part-label PNGs, per-frame npz). Both take a job id or a store."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from itertools import chain
from typing import Any

from flows.cmdutil import EXIT_OK, print_json

__all__ = ["add_result_commands"]

_TARGET_HELP = (
    "a job id (its store from the job registry, else <output-root>/JOB_ID.zarr) or a store "
    "path or URL"
)


def _reader(args: argparse.Namespace) -> Any:
    from flows.exports import resolve_store
    from storage import open_result

    return open_result(
        resolve_store(args.target, output_root=args.output_root, redis_url=args.redis_url)
    )


def _tasks(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(t for t in value.split(",") if t)


def _cmd_query(args: argparse.Namespace) -> int:
    from flows.exports import ExportError, nearest_frame, query_frame, query_track
    from flows.exports.query import check_tasks, csv_header, csv_lines, frame_rows, track_rows

    reader = _reader(args)
    index = args.frame
    if args.time is not None:
        index = nearest_frame(reader, args.time)
    if index is None and args.track is None:
        if args.format == "csv" or args.task is not None:
            msg = "query: --format csv and --task need --frame, --time or --track"
            raise ExportError(msg)
        print_json(reader.summary().as_dict())
        return EXIT_OK
    if args.format == "json":
        if index is not None:
            out = query_frame(reader, index, tasks=_tasks(args.task), track=args.track)
        else:
            out = query_track(reader, args.track, tasks=_tasks(args.task))
        _print_columns(out)
        return EXIT_OK
    tasks = check_tasks(reader, _tasks(args.task))
    if index is not None:
        reader.read_frames(index, index + 1)  # a frame out of range fails before any output
        rows = frame_rows(reader, index, tasks, args.track)
    else:
        rows = track_rows(reader, args.track, tasks)
        rows = chain([next(rows)], rows)  # a missing track fails before any output
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(csv_header(reader, tasks))
    writer.writerows(csv_lines(reader, rows, tasks))
    return EXIT_OK


def _print_columns(out: dict[str, Any]) -> None:
    """A JSON object with one key per line, each value on its line (columns stay readable)."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in out.items()]
    print("{\n" + ",\n".join(lines) + "\n}")


def _size(value: str) -> tuple[int, int]:
    parts = value.lower().replace("x", ",").split(",")
    try:
        h, w = (int(v) for v in parts)
    except ValueError as e:
        msg = f"expected HEIGHT,WIDTH (two integers), got {value!r}"
        raise argparse.ArgumentTypeError(msg) from e
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"expected sides >= 1, got {value!r}")
    return h, w


_FORMAT_OPTIONS = {"images_json": "coco", "coco_17": "coco", "owner": "png", "size": "png,npz"}


def _cmd_export(args: argparse.Namespace) -> int:
    from flows.exports import ExportError, export_coco, export_npz, export_png

    for option, formats in _FORMAT_OPTIONS.items():
        if getattr(args, option) not in (None, False) and args.format not in formats.split(","):
            flag = "--" + option.replace("_", "-")
            raise ExportError(f"export: {flag} is for --format {formats}, not {args.format}")
    reader = _reader(args)
    if args.format == "coco":
        summary = export_coco(reader, args.out, images_json=args.images_json, coco17=args.coco_17)
    elif args.format == "png":
        summary = export_png(reader, args.out, owner=args.owner, size=args.size)
    else:
        summary = export_npz(reader, args.out, size=args.size)
    print(summary.line(), file=sys.stderr)
    print(summary.path)
    return EXIT_OK


def add_result_commands(
    sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Register ``query`` and ``export`` on the CLI's subparsers; ``common`` adds the job
    commands' ``--output-root`` and ``--redis-url``."""
    for add in (_add_query, _add_export):
        p = add(sub)
        common(p)


def _add_query(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    q = sub.add_parser(
        "query",
        help="a store's people: one frame or track (JSON or CSV), or its summary",
        description="Without --frame/--time/--track: the store's summary (JSON). With them: "
        "each person's track id, box (x0, y0, x1, y1 source pixels) and detection score, "
        "and per --task: pose keypoints [x, y, score] named by the store's keypoint set; "
        "seg: area_px and pixels per part class; depth: depth_median; normal: normal_mean; "
        "pointmap: xyz_median (metric), over the pixels the person owns (needs seg).",
    )
    q.add_argument("target", metavar="JOB_ID|STORE", help=_TARGET_HELP)
    at = q.add_mutually_exclusive_group()
    at.add_argument("--frame", type=int, default=None, help="the frame (store index)")
    at.add_argument("--time", type=float, default=None, help="the frame nearest this time (s)")
    q.add_argument(
        "--track", type=int, default=None, help="this track: in --frame/--time, or all frames"
    )
    q.add_argument(
        "--task",
        default=None,
        help="comma list of pose,seg,depth,normal,pointmap (default: pose, if the store has it)",
    )
    q.add_argument("--format", choices=("json", "csv"), default="json")
    q.set_defaults(func=_cmd_query)
    return q


def _add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    e = sub.add_parser(
        "export",
        help="write a store's results as COCO keypoint results, part-label PNGs or npz",
        description="coco: a COCO keypoint results JSON list (COCO-WholeBody fields for 133 "
        "keypoints; all 308 Goliath keypoints as 'keypoints' unless --coco-17); png: "
        "OUT/<frame:06d>.png indexed part labels in the store's class palette; npz: "
        "OUT/<frame:06d>.npz with persons, keypoints, frame maps and patches. Written a "
        "frame at a time; a one-line summary goes to stderr (docs/usage.md).",
    )
    e.add_argument("target", metavar="JOB_ID|STORE", help=_TARGET_HELP)
    e.add_argument("--format", required=True, choices=("coco", "png", "npz"))
    e.add_argument("--out", required=True, help="coco: the results file; png, npz: a directory")
    e.add_argument(
        "--images-json",
        default=None,
        help="coco: also write this images file (what pycocotools' COCO() loads for loadRes)",
    )
    e.add_argument(
        "--coco-17",
        action="store_true",
        help="coco: write the 17 COCO keypoints, taken by name from 133 or 308",
    )
    e.add_argument(
        "--owner", action="store_true", help="png: also OUT/person/<frame:06d>.png (16-bit)"
    )
    e.add_argument(
        "--size", type=_size, default=None, help="png, npz: maps at H,W (default: stored size)"
    )
    e.set_defaults(func=_cmd_export)
    return e
