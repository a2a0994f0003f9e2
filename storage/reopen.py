"""Continuing the store of a job that failed or was cancelled, when its job is retried.

A failed store keeps its committed frames and its resume checkpoint (``Writer.mark_failed``
changes only the status). A retry reopens it: the status goes back to ``running`` under the
retry's fencing token, and the job then resumes it like any other (``Writer.resume``), so the
frames committed before the failure are not computed again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from storage import _store
from storage.errors import StaleOwnerError, StoreNotFoundError

__all__ = ["reopen_failed"]

logger = logging.getLogger(__name__)


def reopen_failed(path_or_url: str | Path, *, fence: int | None) -> bool:
    """Set a failed store running again for a retry of its job holding ``fence``.

    Args:
        path_or_url: Store location (local path or fsspec URL).
        fence: The retry's fencing token (the job claim's); it becomes the store's.

    Returns:
        True if the store was failed and is now running; False if there is no store (its
        creation never finished) or it is not failed (running or complete: nothing to do).

    Raises:
        StaleOwnerError: If the store records a larger token than ``fence`` (a newer claim
            owns it), or any token while ``fence`` is None.
        InvalidValueError: If ``fence`` is not a token.
    """
    _store.check_token(fence)
    try:
        store = _store.open_store(path_or_url, read_only=False)
        with _store.StoreLock(store):
            root = _store.open_root(store, mode="r+")
            meta = _store.read_meta(root)
            if meta["status"] != "failed":
                return False
            recorded = meta.get("fence")
            if not _store.may_take_over(fence, recorded):
                msg = (
                    f"{path_or_url}: the store is owned with fencing token {recorded}; "
                    f"a retry with token {fence} cannot reopen it"
                )
                raise StaleOwnerError(msg)
            reason = meta.pop("error", None)
            meta.update(status="running", fence=fence, retries=int(meta.get("retries", 0)) + 1)
            _store.write_meta(root, meta)
    except StoreNotFoundError:
        return False
    logger.info("reopened failed store %s (it failed with: %s)", path_or_url, reason)
    return True
