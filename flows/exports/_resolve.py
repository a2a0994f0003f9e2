"""Find a job's result store from a job id or a store location, as the job commands do."""

from __future__ import annotations

import re
from pathlib import Path

from storage import (
    Coordinator,
    JobNotFoundError,
    StoreNotFoundError,
    check_output_root,
    connect,
    redis_url_from_env,
    store_state,
)

__all__ = ["resolve_store"]

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # storage/_keys.py's job ids
_EMBEDDED_DIR = ".redis"  # where the embedded server of an output root keeps its data


def resolve_store(target: str, *, output_root: str, redis_url: str | None = None) -> str:
    """The store of ``target``: a store path or URL as it is, else a job id's store.

    A job id is looked up in the job registry (a configured Redis URL, or the embedded
    server of ``output_root`` when it has one: its ``.redis`` data directory exists) for the
    store its submit recorded; a job the registry does not know (one ``run`` drove without
    ``--registry``) falls back to ``<output_root>/<job_id>.zarr``.

    Args:
        target: A store path (an existing local path) or URL (``scheme://...``), or a job id.
        output_root: The output root of the job commands (``--output-root``).
        redis_url: The registry's URL (default: the environment's, else the embedded one).

    Raises:
        StoreNotFoundError: If ``target`` is neither an existing store location nor a job id
            with a store (a FileNotFoundError).
        CoordinationError: If a configured registry cannot be reached.
    """
    if "://" in target or Path(target).exists():
        return target
    if not _JOB_ID.fullmatch(target):
        msg = f"no store at {target!r} (and it is not a job id): give a store path or a job id"
        raise StoreNotFoundError(msg)
    root = check_output_root(output_root).rstrip("/")
    recorded = _registry_store(target, root, redis_url)
    if recorded is not None:
        return recorded
    fallback = f"{root}/{target}.zarr"
    if store_state(fallback) is None:
        msg = (
            f"no job or store {target!r}: the job registry does not know it and there is no "
            f"store at {fallback} (give the store's path, or --output-root)"
        )
        raise StoreNotFoundError(msg)
    return fallback


def _registry_store(job_id: str, root: str, redis_url: str | None) -> str | None:
    """The store the registry recorded for ``job_id``; None when there is no registry to ask
    or it does not know the job (or recorded no store)."""
    url = redis_url or redis_url_from_env()
    if url is None and ("://" in root or not (Path(root) / _EMBEDDED_DIR).is_dir()):
        return None
    with connect(url, root=None if url else root, detach=False) as conn:
        try:
            record = Coordinator(conn.client).get(job_id)
        except JobNotFoundError:
            return None
    store = record.meta.get("store") if isinstance(record.meta, dict) else None
    return str(store) if store else None
