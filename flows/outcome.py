"""How a job attempt ended, in one line a person can read, and recording a failure in its store."""

from __future__ import annotations

import logging
import re

from flows.errors import one_line
from flows.topology import JobActors

__all__ = ["failure_reason", "mark_store_failed"]

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(cause: BaseException, actors: JobActors | None) -> str:
    """One readable line for the job record, without Ray's internals (pids, addresses, ids).

    A stage whose constructor raised (unreadable source, bad checkpoint) reaches us as Ray's
    creation-task traceback, which ends with the original error ("DecodeError: ..."): keep that
    line. A stage whose process died is named, with the likely cause when Ray gives one.
    """
    from ray.exceptions import RayActorError

    text = _ANSI.sub("", str(cause))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if getattr(cause, "actor_init_failed", False):
        line = lines[-1] if lines else type(cause).__name__
    elif isinstance(cause, RayActorError):
        stage = actors.stage_of(getattr(cause, "actor_id", None)) if actors else "a stage"
        why = "it ran out of memory" if "memory" in text.lower() else "it exited unexpectedly"
        line = f"the {stage} process died ({why})"
    else:
        line = f"{type(cause).__name__}: {lines[0] if lines else ''}"
    return one_line(line)


def mark_store_failed(actors: JobActors | None, reason: str) -> None:
    """Record ``reason`` in the job's store (fenced: refused if another owner has it)."""
    import ray

    if actors is None:
        return
    try:
        ray.get(actors.writer.fail.remote(actors.key, reason), timeout=30)
    except Exception:  # the writer may be the stage that died; the caller reports anyway
        logger.warning("could not record the failure in the store", exc_info=True)
