"""The ``sapiens-stream`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main"]

#: Where the demo looks for input when none is given: the project's internal test clip.
DEFAULT_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "people_walking_720p.avi"

EXIT_BAD_INPUT = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    source = args.input or DEFAULT_CLIP
    if not source.is_file():
        print(f"error: no input video at {source}; pass --input VIDEO", file=sys.stderr)
        return EXIT_BAD_INPUT
    boxes = json.loads(args.boxes) if args.boxes else None
    result = run_demo(
        source,
        args.out,
        count=args.frames,
        stride=args.stride,
        size=args.model,
        weights=args.weights,
        boxes=boxes,
        seed=args.seed,
    )
    print(result.to_json())
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from actors.groups import FAMILY_SIZES
    from models import licence
    from models.errors import CheckpointNotFoundError
    from models.hub import FORMATS, hub_ref
    from models.spec import TASKS
    from models.spec2 import SAPIENS2_SIZES, SAPIENS2_TASKS

    rows = []
    catalogue = (
        ("sapiens", TASKS, FAMILY_SIZES["sapiens"]),
        ("sapiens2", SAPIENS2_TASKS, SAPIENS2_SIZES),
    )
    for family, tasks, sizes in catalogue:
        terms = licence(family)
        formats = FORMATS if family == "sapiens" else {"original": ".safetensors"}
        for task in tasks:
            for size in sizes:
                try:
                    ref = hub_ref(task, size, family=family)
                except (FileNotFoundError, CheckpointNotFoundError):
                    continue
                rows.append(
                    {
                        "family": family,
                        "model": size if family == "sapiens" else f"{family}-{size}",
                        "task": task,
                        "size": size,
                        "repos": [
                            ref.repo_id + ("" if f == "original" else f"-{f}") for f in formats
                        ],
                        "licence": terms.name,
                        "licence_summary": terms.summary,
                    }
                )
    print(json.dumps(rows, indent=2))
    return 0


def _cmd_models_verify(args: argparse.Namespace) -> int:
    from models import ModelError, licence, load_checkpoint

    try:
        model = load_checkpoint(
            args.source, task=args.task or "", size=args.size, local_files_only=args.offline
        )
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    params = sum(p.numel() for p in model.parameters())
    info = {part: c.to_dict() for part, c in model.checkpoints.items()}
    terms = licence(model.family)
    print(
        json.dumps(
            {
                "family": model.family,
                "size": model.size,
                "licence": terms.name,
                "licence_summary": terms.summary,
                "tasks": list(model.tasks),
                "parameters": params,
                "checkpoints": info,
            },
            indent=2,
        )
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sapiens-stream", description="Sapiens human-centric vision over video."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the model stack on a few frames, save pictures")
    demo.add_argument("--input", type=Path, default=None, help="video file (default: test clip)")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--frames", type=int, default=3)
    demo.add_argument("--stride", type=int, default=50)
    demo.add_argument(
        "--model",
        default="tiny",
        choices=["tiny", "0.3b", "0.6b", "1b", "2b"],
        help="tiny: random weights (the pictures say so); a size: its released checkpoints",
    )
    demo.add_argument(
        "--weights",
        default=None,
        help="released sizes: 'hub' (default; its cache first, HF_HUB_OFFLINE=1 for the cache "
        "only) or a directory holding the released checkpoint files",
    )
    demo.add_argument(
        "--boxes", default=None, help='JSON list of xyxy boxes, e.g. "[[0,0,640,720]]"'
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    models = sub.add_parser("models", help="list or verify Sapiens and Sapiens2 checkpoints")
    msub = models.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="released checkpoints and their hub repositories")
    ls.set_defaults(func=_cmd_models_list)
    verify = msub.add_parser("verify", help="load a checkpoint strictly and print its facts")
    verify.add_argument(
        "source",
        help="file path or hub name (facebook/sapiens-pose-0.3b, facebook/sapiens2-pose-0.4b)",
    )
    verify.add_argument("--task", default=None)
    verify.add_argument("--size", default=None)
    verify.add_argument("--offline", action="store_true", help="use the hub cache only")
    verify.set_defaults(func=_cmd_models_verify)
    from flows.commands import add_job_commands

    add_job_commands(sub)
    from flows.trunk import add_trunk_commands

    add_trunk_commands(sub)
    __import__("flows.distill").distill.add_distill_command(sub)  # sapiens-stream distill
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from flows.commands import handle_errors

    return handle_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
