"""Child-process entry points for the multi-process storage tests.

Run as ``python storage_procs.py COMMAND ...``; never imported by pytest as a test module.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage import (  # noqa: E402
    BlockWriter,
    Coordinator,
    CoordinatorConfig,
    FrameResult,
    HeartbeatThread,
    StaleOwnerError,
    StoreSpec,
    Writer,
    connect,
)
from storage.synthetic import synthetic_frame  # noqa: E402

if TYPE_CHECKING:
    import redis

SPEC = StoreSpec.for_source(48, 64, num_keypoints=17, frames_per_shard=4)
PP_SPEC = StoreSpec.for_source(48, 64, num_keypoints=17, frames_per_shard=4, patch_size=(32, 16))
"""A per-person store (schema v2): dense results in per-person slots."""


def make_frame(spec: StoreSpec, i: int) -> FrameResult:
    """The deterministic frame ``i`` every process agrees on."""
    return synthetic_frame(spec, i, n_persons=(i * 5) % 4)


def write_blocks(url: str, blocks: list[int]) -> None:
    bw = BlockWriter(url)
    b = bw.spec.frames_per_shard
    for block in blocks:
        bw.write_block(block, [make_frame(bw.spec, i) for i in range(block * b, (block + 1) * b)])


def write_frames(url: str, n: int, delay_s: float, resume: bool) -> None:
    w = Writer.resume(url) if resume else Writer.create(url, SPEC, job={"job_id": "p"})
    print("ready", flush=True)
    for i in range(w.watermark, n):
        w.add(make_frame(SPEC, i))
        time.sleep(delay_s)
    w.finalize()


def stale_owner(url: str, n: int, fence: int, pause_s: float) -> None:
    """Own a new store with ``fence``, commit 16 frames, pause (the parent stops this process
    there), then commit the rest and mark the job failed; print how each step went."""
    w = Writer.create(url, SPEC, job={"job_id": "fenced"}, fence=fence)
    for i in range(16):
        w.add(make_frame(SPEC, i))
    print(f"committed {w.watermark}", flush=True)
    time.sleep(pause_s)
    try:
        for i in range(16, n):
            w.add(make_frame(SPEC, i))
        print("add ok", flush=True)
    except StaleOwnerError:
        print("add refused", flush=True)
    try:
        w.mark_failed("lease lost")
        print("mark_failed ok", flush=True)
    except StaleOwnerError:
        print("mark_failed refused", flush=True)


def create_stalled(url: str) -> None:
    """Start creating a store and hang after its first array (the parent kills us there)."""
    import storage._store

    real = storage._store.create_array

    def create_array(*args: object, **kwargs: object) -> object:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        print("one array", flush=True)
        time.sleep(120)
        return out

    storage._store.create_array = create_array  # type: ignore[assignment]
    Writer.create(url, SPEC, job={"job_id": "stalled"})


def run_worker(args: argparse.Namespace) -> None:
    """Claim one job, write its store block by block (fenced), then complete it."""
    conn = connect(args.redis_url)
    config = CoordinatorConfig(prefix=args.prefix, heartbeat_ttl_s=args.ttl)
    coord = Coordinator(conn.client, config)
    with HeartbeatThread(coord, args.worker, interval_s=args.ttl / 4) as hb:
        lease = None
        deadline = time.monotonic() + 20
        while lease is None and time.monotonic() < deadline:
            lease = coord.claim(args.worker, block_ms=200)
        if lease is None:
            sys.exit(3)
        hb.hold(lease)
        print(f"claimed {lease.job_id} attempt {lease.attempt}", flush=True)
        url = lease.spec["output"]
        n = int(lease.spec["frames"])

        def fenced(frames: int) -> None:
            coord.progress(lease, committed_frames=frames)

        try:
            w = Writer.resume(url, on_commit=fenced, fence=lease.token)
        except FileNotFoundError:
            w = Writer.create(
                url, SPEC, job={"job_id": lease.job_id}, on_commit=fenced, fence=lease.token
            )
        print(f"resuming at {w.watermark}", flush=True)
        for i in range(w.watermark, n):
            w.add(make_frame(SPEC, i))
            time.sleep(args.delay)
        frames = w.finalize()
        coord.complete(lease, result={"frames": frames, "worker": args.worker})
        hb.release(lease)
    print("done", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    wb = sub.add_parser("write-blocks")
    wb.add_argument("url")
    wb.add_argument("blocks", type=int, nargs="+")
    wf = sub.add_parser("write-frames")
    wf.add_argument("url")
    wf.add_argument("n", type=int)
    wf.add_argument("--delay", type=float, default=0.0)
    wf.add_argument("--resume", action="store_true")
    so = sub.add_parser("stale-owner")
    so.add_argument("url")
    so.add_argument("n", type=int)
    so.add_argument("--fence", type=int, required=True)
    so.add_argument("--pause", type=float, default=2.0)
    cs = sub.add_parser("create-stalled")
    cs.add_argument("url")
    wk = sub.add_parser("worker")
    wk.add_argument("redis_url")
    wk.add_argument("prefix")
    wk.add_argument("worker")
    wk.add_argument("--ttl", type=float, default=1.0)
    wk.add_argument("--delay", type=float, default=0.0)
    es = sub.add_parser("embedded")
    es.add_argument("root")
    es.add_argument("--detach", action="store_true")
    es.add_argument("--hold", type=float, default=0.0)
    args = p.parse_args()
    if args.cmd == "write-blocks":
        write_blocks(args.url, args.blocks)
    elif args.cmd == "write-frames":
        write_frames(args.url, args.n, args.delay, args.resume)
    elif args.cmd == "stale-owner":
        stale_owner(args.url, args.n, args.fence, args.pause)
    elif args.cmd == "create-stalled":
        create_stalled(args.url)
    elif args.cmd == "worker":
        run_worker(args)
    else:
        from storage.embedded import EmbeddedServer

        server = EmbeddedServer.ensure(args.root, detach=args.detach)
        print(f"server {server.pid} {int(server.owned)}", flush=True)
        time.sleep(args.hold)
        server.close()


if __name__ == "__main__":
    main()


def snapshot(url: str | Path) -> dict[str, bytes]:
    """Every file of a local store except the root metadata (which holds timings)."""
    root = Path(url)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root) != Path("zarr.json")
    }


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Remove every key under ``prefix`` (shared servers: touch nothing else)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
    if keys:
        client.delete(*keys)
