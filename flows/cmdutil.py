"""What the CLI's job commands share: exit codes, JSON output, the job spec from the command
line and the job registry of an output root."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from actors.groups import parse_model_name
from flows.errors import SpecError
from flows.spec import JobSpec

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "coordinator_for",
    "print_json",
    "spec_from_args",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    raw: dict[str, Any] = json.loads(Path(args.spec).read_text()) if args.spec else {}
    if args.spec_json:
        raw = json.loads(args.spec_json)
    raw["source"] = args.video
    raw.setdefault("output_root", args.output_root)
    for key, value in (
        ("job_id", args.job_id),
        ("detector", args.detector),
        ("max_side", args.max_side),
        ("reduced_decode", getattr(args, "reduced_decode", None)),
        ("dense_mode", args.dense_mode),
        ("batch_size", args.batch_size),
        ("priority", getattr(args, "priority", None)),
    ):
        if value is not None:
            raw[key] = value
    if args.tasks:
        raw["tasks"] = args.tasks.split(",")
    _section_options(raw, args)
    if args.boxes:
        raw["boxes"] = json.loads(Path(args.boxes).read_text())
        raw.setdefault("detector", "boxes")
    return JobSpec.from_dict(raw)


def _section_options(raw: dict[str, Any], args: argparse.Namespace) -> None:
    """The flags of the spec's ``model``, ``detection``, ``sampling`` and ``live`` sections,
    into ``raw`` (flags that were not given leave the spec file's values)."""
    model = raw.setdefault("model", {})
    if args.model is not None:
        model["family"], model["size"] = parse_model_name(args.model)
    for key, value in (
        ("weights", args.weights),
        ("compile", getattr(args, "compile", None)),
        ("channels_last", getattr(args, "channels_last", None)),
        ("flip_test", getattr(args, "flip_test", None)),
        ("num_keypoints", getattr(args, "keypoints", None)),
    ):
        if value is not None:
            model[key] = value
    detection = raw.setdefault("detection", {})
    for key, value in (
        ("model", args.detector_model),
        ("weights", args.detector_weights),
        ("input_size", args.detector_input_size),
        ("device", getattr(args, "detector_device", None)),
        ("score_thr", args.score_thr),
        ("nms_iou", args.nms_iou),
    ):
        if value is not None:
            detection[key] = value
    sampling = raw.setdefault("sampling", {})
    for key, value in (
        ("stride", args.stride),
        ("target_fps", args.fps),
        ("start_s", args.start),
        ("end_s", args.end),
    ):
        if value is not None:
            sampling[key] = value
    live = raw.setdefault("live", {})
    for key, value in (
        ("reconnects", getattr(args, "reconnects", None)),
        ("backoff_s", getattr(args, "reconnect_backoff", None)),
    ):
        if value is not None:
            live[key] = value


def coordinator_for(args: argparse.Namespace, *, detach: bool) -> Any:
    from storage import Coordinator, InvalidValueError, check_output_root, connect
    from storage.connection import redis_url_from_env

    try:
        root = check_output_root(args.output_root)
    except InvalidValueError as e:
        raise SpecError(str(e)) from e
    if "://" in root:  # object storage: no place for the embedded server's data
        if not (args.redis_url or redis_url_from_env()):
            raise SpecError(
                f"output root {root!r} is remote: give --redis-url or SAPIENS_STREAM_REDIS_URL "
                "(the embedded Redis keeps its data under a local output root)"
            )
    else:
        Path(root).mkdir(parents=True, exist_ok=True)
    return Coordinator(connect(args.redis_url, root=root, detach=detach).client)
