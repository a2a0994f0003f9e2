"""Killing a job's writer inside a commit, proven from the store on disk.

A commit of block ``k`` writes the block's chunks (data arrays, then its ``blocks/frames``
marker) and only then records the watermark ``committed_frames = (k + 1) * B`` in the root
``zarr.json``. So, while the watermark is ``W = k * B``, any file of block ``k`` on disk --
whole or a ``*.partial`` temp file of the local store -- means a commit is under way: its data
is (partly) written and its watermark is not recorded yet.

:class:`CommitTrap` freezes the writer process with SIGSTOP, waits until every thread of it has
stopped, reads the store, and SIGKILLs it when it is inside a commit; otherwise it resumes it
with SIGCONT and looks again a few milliseconds later. Only that on-disk order is relied on, not
the writer's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from flows.run import stage_name
from storage import StoreSpec
from storage.schema import ZarrLayout

__all__ = ["CommitCut", "CommitTrap", "read_cut", "stage_pid", "trap_stage"]

_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")
_CHUNK_KEY = re.compile(r"(?P<array>.+)/c[./](?P<first>\d+)(?:[./]\d+)*$")
_STOPPED = frozenset("TtZX")  # stopped, traced, or gone


@dataclass(frozen=True, slots=True)
class CommitCut:
    """What the store held at one frozen instant.

    Attributes:
        watermark: ``committed_frames`` recorded in the root ``zarr.json``.
        block: the block the next commit writes (``watermark // B``).
        checkpoint_frames: frames covered by the saved resume state (0: none).
        data_files: data chunk files of ``block`` on disk, whole or partial.
        block_partials: ``*.partial`` temp files of ``block``'s chunks (marker included).
        marker: whether ``block``'s ``blocks/frames`` commit marker is on disk (whole).
        partial_files: ``*.partial`` temp files anywhere in the store.
    """

    watermark: int
    block: int
    checkpoint_frames: int
    data_files: int
    block_partials: int
    marker: bool
    partial_files: int

    @property
    def inside_commit(self) -> bool:
        """Block ``block`` has files on disk while the watermark does not cover it yet."""
        return self.data_files > 0 or self.block_partials > 0 or self.marker

    @property
    def unrecorded(self) -> bool:
        """Block ``block``'s commit marker is on disk and none of its files is mid-write, but
        the watermark does not cover it yet (a resumed writer must adopt or rewrite it)."""
        return self.marker and self.block_partials == 0


def read_cut(store: Path) -> CommitCut:
    """Read the commit state of the local store at ``store`` (call it while no one writes)."""
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["sapiens_stream"]
    layout = ZarrLayout.from_spec(StoreSpec.from_dict(meta["layout"]))
    watermark = int(meta["committed_frames"])
    block = watermark // layout.spec.frames_per_shard
    arrays = layout.by_path()
    data = block_partials = partials = 0
    marker = False
    for dirpath, _, names in os.walk(store):
        for name in names:
            key = (Path(dirpath) / name).relative_to(store).as_posix()
            whole = _PARTIAL.sub("", key)
            partials += whole != key
            chunk = _CHUNK_KEY.match(whole)  # "<array>/c.<i>.<j>" (or "/c/<i>/<j>")
            if chunk is None or chunk["array"] not in arrays:
                continue
            path = chunk["array"]
            a = arrays[path]
            first_row = int(chunk["first"]) * (a.shard_rows or a.chunk_rows)
            if first_row // layout.rows_for_blocks(a, 1) != block:
                continue
            block_partials += whole != key
            if path != "blocks/frames":
                data += 1
            elif whole == key:
                marker = True
    checkpoint = meta.get("checkpoint") or {}
    return CommitCut(
        watermark=watermark,
        block=block,
        checkpoint_frames=int(checkpoint.get("frames", 0)),
        data_files=data,
        block_partials=block_partials,
        marker=marker,
        partial_files=partials,
    )


def _freeze(pid: int, timeout_s: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until each of its threads is stopped (a thread inside a
    system call such as fsync stops only when the call returns)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue  # the thread exited
            states.append(stat.rsplit(")", 1)[1].split()[0])
        if all(s in _STOPPED for s in states):
            return
        if time.monotonic() > deadline:
            msg = f"process {pid} did not stop within {timeout_s} s (thread states {states})"
            raise TimeoutError(msg)
        time.sleep(0.0002)


Target = Callable[[], tuple[int, Callable[[], None] | None]]
"""Finds the writer's pid and what to do just before killing it (may wait for them)."""


class CommitTrap:
    """Kills a job's writer process the first time it is seen inside a commit.

    Args:
        store: the job's local store directory.
        target: called once, on the trap's thread, before it starts looking: returns the
            writer's pid and a function called while the writer is frozen inside the commit,
            just before it is killed (e.g. to kill another stage of the job at that instant),
            or None.
        watermarks: the watermarks at which a commit may be cut (e.g. ones that leave work
            to do after the kill, and a saved checkpoint to resume from).
        when: which cuts to kill at (default: any inside a commit).
        timeout_s: give up (and let the writer run) after this long.

    Run it with :meth:`start`; :meth:`join` returns the :class:`CommitCut` the writer was
    killed at, or None if it never was (the job ended, or the writer was never seen inside a
    commit at one of ``watermarks``).
    """

    def __init__(
        self,
        store: Path,
        target: Target,
        *,
        watermarks: tuple[int, ...],
        when: Callable[[CommitCut], bool] = lambda cut: cut.inside_commit,
        timeout_s: float = 240,
    ) -> None:
        self.store, self.target, self.when = store, target, when
        self.watermarks, self.timeout_s = watermarks, timeout_s
        self.cut: CommitCut | None = None
        self.looks = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-trap", daemon=True)

    def start(self) -> CommitTrap:
        self._thread.start()
        return self

    def join(self) -> CommitCut | None:
        self._stop.set()
        self._thread.join(timeout=120)
        if self._error is not None:
            raise self._error
        return self.cut

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            pid, before_kill = self.target()
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    _freeze(pid)
                except (ProcessLookupError, FileNotFoundError):
                    return  # the writer is gone: the job ended or died otherwise
                try:
                    self.looks += 1
                    # A pooled writer exists before the job's store does.
                    cut = read_cut(self.store) if (self.store / "zarr.json").exists() else None
                    if cut and cut.watermark in self.watermarks and self.when(cut):
                        if before_kill is not None:
                            before_kill()
                        os.kill(pid, signal.SIGKILL)
                        self.cut = cut
                        return
                finally:
                    if self.cut is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGCONT)
                # Inside a commit, let the writer run only a moment between looks.
                time.sleep(0.0002 if cut and cut.inside_commit else 0.002)
        except BaseException as e:  # reported by join()
            self._error = e


def stage_pid(ray: ModuleType, job_id: str, stage: str, timeout_s: float = 120) -> int:
    """The process of a job's stage actor of the first attempt, once it exists and is
    constructed (see ``flows.run.stage_name``)."""
    prefix = stage_name(job_id, stage, 0)
    deadline = time.monotonic() + timeout_s
    while not (names := [n for n in ray.util.list_named_actors() if n.startswith(prefix)]):
        if time.monotonic() > deadline:
            msg = f"no actor named {prefix}* within {timeout_s} s"
            raise TimeoutError(msg)
        time.sleep(0.05)
    (name,) = names
    actor = ray.get_actor(name)
    return int(ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=timeout_s))


def trap_stage(
    ray: ModuleType,
    job_id: str,
    stage: str,
    store: str,
    watermarks: tuple[int, ...],
    when: Callable[[CommitCut], bool] = lambda cut: cut.inside_commit,
) -> CommitTrap:
    """Start (before the job) a trap that kills ``stage`` of the job together with its
    writer, while the writer is frozen inside a commit (``stage == "writer"``: the writer
    alone): whichever process dies, the store is left holding files of a block that its
    watermark does not cover."""

    def target() -> tuple[int, Callable[[], None] | None]:
        writer = stage_pid(ray, job_id, "writer")
        if stage == "writer":
            return writer, None
        other = stage_pid(ray, job_id, stage)
        return writer, lambda: os.kill(other, signal.SIGKILL)

    return CommitTrap(Path(store), target, watermarks=watermarks, when=when).start()
