"""``sapiens-stream distill``: fine-tune a trunk's shared prefix (``--train suffixes``: every
part) on Ray Train so that its outputs match its teachers' on crops of the user's own videos,
then report its agreement with the teachers on held-out frames (docs/trunk.md)."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from flows.cmdutil import EXIT_BAD_INPUT
from models.errors import CheckpointError
from models.sapiens import SapiensModel

__all__ = ["add_distill_command", "check_teachers", "distill", "train_loop"]

STATE_FILE = "distill.pt"


def check_teachers(manifest: Any, teachers: list[SapiensModel]) -> None:
    """The teachers must be the trunk's: same family, size, tasks and SHA-256.

    Raises:
        CheckpointError: one line naming the first mismatch.
    """
    t0 = teachers[0]
    if (t0.family, t0.size) != (manifest.family, manifest.size):
        raise CheckpointError(
            f"the trunk is {manifest.family} {manifest.size}, the teachers {t0.family} {t0.size}"
        )
    tasks = sorted(t.tasks[0] for t in teachers)
    if tasks != sorted(manifest.teachers):
        raise CheckpointError(f"the trunk's tasks are {sorted(manifest.teachers)}, got {tasks}")
    for t in teachers:
        task, want = t.tasks[0], manifest.teachers[t.tasks[0]].get("sha256")
        got = t.checkpoints[task].sha256 if task in t.checkpoints else None
        if want and got and want != got:
            raise CheckpointError(f"{task}: sha256 {got} is not the trunk's teacher ({want})")


def _progress(queue: Any, total: int) -> threading.Thread:
    """A thread printing one line per report that the rank-0 worker puts on ``queue``."""
    from flows.progress import LineDisplay, RateMeter, Snapshot

    display, meter = LineDisplay(sys.stderr, every_s=0.0), RateMeter()

    def _run() -> None:
        while (item := queue.get()) is not None:
            losses = ", ".join(f"{k} {v:.4g}" for k, v in item["losses"].items())
            detail = f"loss {item['loss']:.4g} ({losses})"
            snap = Snapshot.of("distill", meter, done=item["step"], total=total, unit="steps")
            display.show(Snapshot(**{**_fields(snap), "detail": detail}))

    thread = threading.Thread(target=_run, daemon=True)
    thread.start()
    return thread


def _fields(snap: Any) -> dict[str, Any]:
    return {name: getattr(snap, name) for name in snap.__slots__}


def train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard of the crops, the teachers' outputs as targets, a
    checkpoint (trunk, optimiser, step) every ``every`` steps, resumed from on restart."""
    import ray.train
    import ray.train.torch

    from flows.trunk import load_teachers
    from models._distill import distill_loss, teacher_outputs, trainable_parameters
    from models.trunk import load_trunk

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    trunk = load_trunk(config["trunk"], device=device).train()
    teachers = [t.to(device).eval() for t in load_teachers(config["teachers"])]
    optim = torch.optim.AdamW(
        trainable_parameters(trunk, config["train"]), lr=config["lr"], weight_decay=0.0
    )
    start, scale = 0, None
    if checkpoint := ray.train.get_checkpoint():
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location=device, weights_only=True)
        trunk.load_state_dict(state["trunk"])
        optim.load_state_dict(state["optim"])
        start, scale = int(state["step"]), state["scale"]
    model = ray.train.torch.prepare_model(trunk)
    shard = config["crops"][rank::world]
    steps, every, tasks = config["steps"], config["every"], trunk.tasks
    for step in range(start, steps):
        # the batch of a step depends on the step only: a resumed run draws the same ones
        gen = torch.Generator().manual_seed(config["seed"] * 1_000_003 + step * 97 + rank)
        batch = shard[torch.randint(shard.shape[0], (config["batch_size"],), generator=gen)]
        batch = batch.to(device)
        refs = teacher_outputs(teachers, batch, config["batch_size"])
        out = model(batch)
        if scale is None:  # each loss's value on the first batch (of rank 0: every rank's)
            scale = _first_losses(out, refs, tasks, world, device)
        loss, losses = distill_loss(out, refs, tasks, scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if (step + 1) % every and step + 1 != steps:
            continue
        metrics = {"step": step + 1, "loss": float(loss.detach()), **losses}
        if rank:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            state = {"trunk": trunk.state_dict(), "optim": optim.state_dict()}
            state.update(step=step + 1, scale=scale)
            torch.save(state, Path(d) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        if config.get("queue") is not None:
            config["queue"].put({"step": step + 1, "loss": metrics["loss"], "losses": losses})


def _first_losses(
    out: dict[str, torch.Tensor], refs: dict[str, torch.Tensor], tasks: Any, world: int, device: Any
) -> dict[str, float]:
    """Each task's loss on the first batch, rank 0's sent to every rank."""
    from models._distill import task_loss

    values = torch.stack([task_loss(t, out, refs).detach() for t in tasks]).to(device)
    if world > 1:
        torch.distributed.broadcast(values, src=0)
    return dict(zip(tasks, values.tolist(), strict=True))


def _trained_state(result: Any) -> dict[str, torch.Tensor]:
    if result.checkpoint is None:
        raise RuntimeError(f"the training run left no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    return state["trunk"]  # type: ignore[no-any-return]


def distill(
    trunk_path: Path,
    sources: list[str],
    train_crops: torch.Tensor,
    *,
    options: dict[str, Any],
    storage: Path,
    name: str,
) -> tuple[Any, Any]:
    """Train on ``train_crops`` with Ray Train; returns the input trunk and the distilled one.

    Args:
        trunk_path: a ``trunk build`` file.
        sources: the teachers (``TASK=PATH`` or hub names), readable by every worker.
        train_crops: normalised crops (N, 3, H, W).
        options: ``steps``, ``every``, ``batch_size``, ``lr``, ``train``, ``seed``,
            ``workers``, ``use_gpu``.
        storage: Ray Train's storage path; a run of the same ``name`` there is resumed.
        name: the run's name.
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from models.trunk import load_trunk

    queue = Queue()
    printer = _progress(queue, options["steps"])
    keys = ("steps", "every", "batch_size", "lr", "train", "seed")
    config = {k: options[k] for k in keys}
    config.update(trunk=str(trunk_path), teachers=sources, crops=train_crops, queue=queue)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=options["workers"], use_gpu=options["use_gpu"]),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage.resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    queue.put(None)
    printer.join(timeout=5)
    before = load_trunk(trunk_path)
    after = copy.deepcopy(before)
    after.load_state_dict(_trained_state(result))
    return before, after.eval()


def _split(args: argparse.Namespace, family: str, size: str) -> tuple[torch.Tensor, ...]:
    """Crops of the first ``frames - holdout`` frames to train on, of the last ``holdout``
    frames to evaluate on."""
    from flows.trunk import TINY_CROP, video_crops
    from models.spec import INPUT_SIZE
    from models.spec2 import SAPIENS2_INPUT_SIZE

    full = SAPIENS2_INPUT_SIZE if family == "sapiens2" else INPUT_SIZE
    crop = TINY_CROP if size == "tiny" else full
    if args.crop_size:
        crop = tuple(int(v) for v in args.crop_size.split("x"))
    boxes = json.loads(Path(args.boxes).read_text()) if args.boxes else []
    crops = video_crops(args.video, args.frames, args.stride, crop, boxes, family=family)
    per_frame = max(1, len(boxes))
    frames = crops.shape[0] // per_frame
    if frames <= args.holdout:
        raise ValueError(f"{frames} frames decoded: need more than --holdout {args.holdout}")
    cut = (frames - args.holdout) * per_frame
    return crops[:cut], crops[cut:]


def _problem(args: argparse.Namespace) -> str:
    if args.holdout < 1:
        return f"--holdout must be at least 1, got {args.holdout}"
    if min(args.steps, args.batch_size, args.workers, args.checkpoint_every) < 1:
        return "--steps, --batch-size, --workers and --checkpoint-every must be at least 1"
    if args.out.resolve() == args.trunk.resolve():
        return "--out must not overwrite the input trunk"
    return ""


def _cmd_distill(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flows.raylocal import ensure_ray
    from flows.trunk import load_teachers
    from models._distill import distill_report, trainable_parameters
    from models.trunk import load_trunk, read_manifest, save_trunk

    try:
        import ray.train.torch  # noqa: F401
    except ImportError as e:
        print(f"error: distill needs Ray Train: pip install '.[train]' ({e})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if problem := _problem(args):
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.trunk.is_file():
        raise FileNotFoundError(f"{args.trunk}: no such trunk file")
    manifest = read_manifest(args.trunk)
    teachers = load_teachers(args.checkpoints)
    check_teachers(manifest, teachers)
    try:
        trainable_parameters(load_trunk(args.trunk), args.train)
        train, held = _split(args, manifest.family, manifest.size)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    options = {
        "steps": args.steps,
        "every": args.checkpoint_every,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "train": args.train,
        "seed": args.seed,
        "workers": args.workers,
        "use_gpu": args.gpu,
    }
    storage = args.storage or args.out.parent / f"{args.out.stem}.train"
    ensure_ray(args.address)
    before, after = distill(
        args.trunk, args.checkpoints, train, options=options, storage=storage, name="distill"
    )
    report = {
        "trunk": str(args.trunk),
        "steps": args.steps,
        "train": args.train,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "train_crops": int(train.shape[0]),
        "held_out_frames": args.holdout,
        "pck_normaliser": "crop diagonal",
        **distill_report(teachers, before, after, held),
    }
    after.manifest = replace(manifest, distillation=report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_trunk(after, args.out)
    path = args.out.with_suffix(".distill.json")
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({"trunk": str(args.out), "report": str(path), **report}, indent=2))
    return 0


def add_distill_command(sub: argparse._SubParsersAction) -> None:
    """Register ``distill`` on the CLI's subparsers."""
    p = sub.add_parser("distill", help="train a trunk to match its teachers on your videos")
    p.add_argument("trunk", type=Path, help="trunk file from 'sapiens-stream trunk build'")
    p.add_argument("checkpoints", nargs="+", help="its teachers: TASK=PATH or hub names")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--frames", type=int, default=64, help="frames to decode")
    p.add_argument("--holdout", type=int, default=8, help="last frames kept for evaluation")
    p.add_argument("--stride", type=int, default=1, help="every STRIDE-th frame")
    p.add_argument("--boxes", default=None, help="JSON file: [[x1, y1, x2, y2], ...] per frame")
    p.add_argument("--crop-size", default=None, help="HxW crops (default: the model's input)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8, help="crops per worker per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train", choices=["prefix", "suffixes"], default="prefix")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--storage", type=Path, default=None, help="checkpoints (default OUT.train/)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="distilled trunk .safetensors")
    p.set_defaults(func=_cmd_distill)
