"""One runner per job on one machine, without a job registry: an OS lock beside the store.

``sapiens-stream run`` drives its own job in its own process, with no Redis. What a registry's
lease gave it (no second runner of the same job while one is alive; a runner that died leaves
the job to be resumed) comes from an exclusive ``flock`` on ``<store>.run``, held for the whole
run: the kernel releases it when the holder dies, however it dies. Stores that are not local
directories have no such lock (a no-op); jobs writing there are coordinated by ``serve``.

Example:
    >>> import tempfile, pathlib
    >>> url = str(pathlib.Path(tempfile.mkdtemp()) / "job.zarr")
    >>> with JobRunLock(url):
    ...     try:
    ...         JobRunLock(url).__enter__()
    ...     except StoreBusyError as e:
    ...         print("busy")
    busy
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from zarr.storage import LocalStore

from storage._store import open_store
from storage.errors import StorageError

__all__ = ["JobRunLock", "StoreBusyError"]


class StoreBusyError(StorageError):
    """Another live process runs the job of this store."""


class JobRunLock:
    """Exclusive, non-blocking lock on ``<store>.run`` for the life of a job's run.

    Args:
        url: the job's store location (it need not exist yet).

    Raises (on entering):
        StoreBusyError: another process holds the lock.
    """

    def __init__(self, url: str | Path) -> None:
        store = open_store(url, read_only=False, must_exist=False)
        self.path: Path | None = None
        if isinstance(store, LocalStore):
            root = Path(store.root).absolute()
            self.path = root.with_name(root.name + ".run")
        self._fd: int | None = None

    def __enter__(self) -> JobRunLock:
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"another process is running the job of {self.path.with_suffix('')}"
            raise StoreBusyError(msg) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
