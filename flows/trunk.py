"""``sapiens-stream trunk analyze|build``: where task models can share their first blocks, and
the trunk checkpoint that shares them (docs/trunk.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flows.cmdutil import EXIT_BAD_INPUT
from models import load_checkpoint
from models.errors import CheckpointError
from models.sapiens import SapiensModel
from models.spec import INPUT_SIZE

__all__ = ["add_trunk_commands", "analyze", "load_teachers", "video_crops"]

TINY_CROP = (256, 192)
SHARED_HELP = "shared weights: mean (of the teachers), pretrained (--pretrained) or a task name"


def load_teachers(sources: list[str]) -> list[SapiensModel]:
    """Task checkpoints given as ``TASK=PATH`` or hub names, of one family and size.

    Raises:
        CheckpointError: a file that does not load, or teachers of different sizes or tasks.
    """
    teachers = []
    for source in sources:
        task, sep, path = source.partition("=")
        model = load_checkpoint(path, task=task) if sep else load_checkpoint(source)
        if len(model.tasks) != 1:
            raise CheckpointError(f"{source}: expected a task checkpoint, got tasks {model.tasks}")
        teachers.append(model)
    kinds = sorted({f"{t.family}-{t.size}" for t in teachers})
    if len(kinds) != 1:
        raise CheckpointError(f"teachers must be of one family and size, got {kinds}")
    tasks = [t.tasks[0] for t in teachers]
    if len(set(tasks)) != len(tasks):
        raise CheckpointError(f"teachers must have distinct tasks, got {tasks}")
    return teachers


def video_crops(
    video: Path,
    frames: int,
    stride: int,
    crop_size: tuple[int, int],
    boxes: list[list[float]],
    *,
    family: str = "sapiens",
) -> torch.Tensor:
    """Normalised person crops (N, 3, H, W) of the first ``frames`` sampled frames, cut by the
    pipeline's own crop stage: each box of ``boxes`` on every frame, or the whole frame."""
    from media import read_frames
    from models.preprocess import CONFIG_NORM, crop_persons, normalize

    rgb = []
    for _, frame in read_frames(str(video), stride=stride):
        rgb.append(frame)
        if len(rgb) == frames:
            break
    if not rgb:
        raise FileNotFoundError(f"{video}: no frame decoded; check the file and --stride")
    batch = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2)
    h, w = batch.shape[-2:]
    per_frame = boxes or [[0.0, 0.0, float(w), float(h)]]
    index = torch.arange(len(rgb)).repeat_interleave(len(per_frame))
    box = torch.tensor(per_frame, dtype=torch.float32).repeat(len(rgb), 1)
    mode = "bicubic" if family == "sapiens2" else "bilinear"  # as models.analyze.Analyzer
    crops = crop_persons(batch, index, box, crop_size, enlarge_mode=mode)
    return normalize(crops.crops, CONFIG_NORM)


def _tolerance(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        task, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--tolerance takes TASK=VALUE,..., got {item!r}")
        out[task.strip()] = float(value)
    return out


def _shared_problem(shared: str, teachers: list[SapiensModel], pretrained: str | None) -> str:
    """Why ``--shared`` cannot be used (one line), or an empty string."""
    tasks = [t.tasks[0] for t in teachers]
    if shared not in ("mean", "pretrained", *tasks):
        return f"--shared must be mean, pretrained or one of {tasks}, got {shared!r}"
    if shared == "pretrained" and not pretrained:
        return "--shared pretrained needs --pretrained CKPT"
    return ""


def analyze(
    teachers: list[SapiensModel],
    crops: torch.Tensor,
    *,
    shared: str,
    tolerance: dict[str, float],
    pretrained: str | None = None,
) -> dict[str, Any]:
    """The report of ``trunk analyze`` (see docs/trunk.md)."""
    from models._trunk_analyze import (
        ERROR_UNITS,
        branch_errors,
        choose_k,
        divergence,
        flops_saved,
        pretrained_backbone,
    )

    weights = pretrained_backbone(pretrained, teachers[0]) if pretrained else None
    errors = branch_errors(teachers, crops, shared, pretrained=weights)
    flops = flops_saved(teachers, (crops.shape[-2], crops.shape[-1]))
    rows = [{**f, "errors": e} for f, e in zip(flops, errors, strict=True)]
    return {
        "teachers": {t.tasks[0]: t.checkpoints[t.tasks[0]].to_dict() for t in teachers},
        "family": teachers[0].family,
        "size": teachers[0].size,
        "shared": shared,
        "crops": int(crops.shape[0]),
        "crop_size": list(crops.shape[-2:]),
        "units": {t.tasks[0]: ERROR_UNITS[t.tasks[0]] for t in teachers},
        "divergence": divergence(teachers),
        "rows": rows,
        "tolerance": tolerance,
        "best_k": choose_k(errors, tolerance),
    }


def _table(report: dict[str, Any]) -> str:
    tasks = list(report["units"])
    lines = [f"{'k':>3} {'GFLOPs/crop':>12} {'saved':>7} " + " ".join(f"{t:>10}" for t in tasks)]
    for row in report["rows"]:
        frac = row["saved"] / row["separate"]
        errs = " ".join(f"{row['errors'][t]:>10.4g}" for t in tasks)
        lines.append(f"{row['k']:>3} {row['trunk'] / 1e9:>12.3f} {frac:>7.1%} {errs}")
    lines.append(f"largest k within tolerance {report['tolerance']}: {report['best_k']}")
    return "\n".join(lines)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from flows._trunk_plot import plot_errors
    from models.spec2 import SAPIENS2_INPUT_SIZE

    try:
        tolerance = _tolerance(args.tolerance)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    teachers = load_teachers(args.checkpoints)
    if problem := _shared_problem(args.shared, teachers, args.pretrained):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    full = SAPIENS2_INPUT_SIZE if teachers[0].family == "sapiens2" else INPUT_SIZE
    crop = TINY_CROP if teachers[0].size == "tiny" else full
    boxes = json.loads(Path(args.boxes).read_text()) if args.boxes else []
    crops = video_crops(
        args.video, args.frames, args.stride, crop, boxes, family=teachers[0].family
    )
    try:
        report = analyze(
            teachers, crops, shared=args.shared, tolerance=tolerance, pretrained=args.pretrained
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analyze.json").write_text(json.dumps(report, indent=2))
    fractions = [r["saved"] / r["separate"] for r in report["rows"]]
    plot_errors(
        args.out / "errors.png", fractions, [r["errors"] for r in report["rows"]], tolerance
    )
    print(_table(report))
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from models._trunk_analyze import pretrained_backbone, shared_state
    from models.trunk import TrunkManifest, build_trunk, save_trunk, teacher_facts

    teachers = load_teachers(args.checkpoints)
    errors: dict[str, float] = {}
    if args.errors:
        rows = json.loads(Path(args.errors).read_text())["rows"]
        errors = rows[args.k]["errors"] if args.k < len(rows) else {}
    try:
        weights = pretrained_backbone(args.pretrained, teachers[0]) if args.pretrained else None
        state = shared_state(teachers, args.k, args.shared, weights)
        manifest = TrunkManifest(
            family=teachers[0].family,
            size=teachers[0].size,
            k=args.k,
            shared=args.shared,
            teachers={t.tasks[0]: teacher_facts(t) for t in teachers},
            errors=errors,
        )
        trunk = build_trunk(teachers, args.k, state, manifest=manifest)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_trunk(trunk, args.out)
    print(json.dumps({"trunk": str(args.out), **manifest.to_dict()}, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoints", nargs="+", help="task checkpoints: TASK=PATH or a hub name")
    p.add_argument("--shared", default="mean", help=SHARED_HELP)
    p.add_argument(
        "--pretrained", default=None, help="the pretrain checkpoint (--shared pretrained)"
    )


def add_trunk_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``trunk analyze`` and ``trunk build`` on the CLI's subparsers."""
    trunk = sub.add_parser("trunk", help="share the first backbone blocks of task models")
    tsub = trunk.add_subparsers(dest="trunk_command", required=True)
    an = tsub.add_parser("analyze", help="error and FLOPs saved per branch point, on a video")
    _common(an)
    an.add_argument("--video", type=Path, required=True)
    an.add_argument("--frames", type=int, default=8, help="frames to analyse")
    an.add_argument("--stride", type=int, default=1, help="every STRIDE-th frame")
    an.add_argument("--boxes", default=None, help="JSON file: [[x1, y1, x2, y2], ...] per frame")
    an.add_argument("--tolerance", default=None, help="TASK=ERROR,... in task units")
    an.add_argument("--out", type=Path, required=True, help="directory for JSON and PNG")
    an.set_defaults(func=_cmd_analyze)
    build = tsub.add_parser("build", help="write a trunk checkpoint sharing blocks [0, k)")
    _common(build)
    build.add_argument("--k", type=int, required=True, help="branch point")
    build.add_argument("--errors", default=None, help="analyze.json: record its errors at k")
    build.add_argument("--out", type=Path, required=True, help="trunk .safetensors file")
    build.set_defaults(func=_cmd_build)
