"""Per-job objects that a pooled stage actor keeps between calls.

The cache holds what is costly to rebuild (an open video reader, an open store), never what is
needed to be right: losing an entry costs a reopen from the state the caller sends. Entries are
keyed by a job attempt's session key; one lock per key keeps a job's calls in order while other
jobs' calls run beside them. Entries left behind by a driver that died go after ``idle_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["SessionCache"]

T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    lock: threading.Lock = field(default_factory=threading.Lock)
    value: T | None = None
    used: float = field(default_factory=time.monotonic)


class SessionCache(Generic[T]):
    """Objects by session key, each used under its own lock.

    Args:
        idle_s: an entry unused this long is dropped (checked whenever a session starts).
        on_drop: called with a dropped value (e.g. to close it).
    """

    def __init__(
        self, *, idle_s: float = 900.0, on_drop: Callable[[T], None] | None = None
    ) -> None:
        self._entries: dict[str, _Entry[T]] = {}
        self._lock = threading.Lock()
        self._idle_s = idle_s
        self._on_drop = on_drop

    def __len__(self) -> int:
        with self._lock:
            return sum(e.value is not None for e in self._entries.values())

    @contextmanager
    def session(self, key: str) -> Iterator[_Entry[T]]:
        """The entry of ``key`` (value None when there is none yet), locked for the caller;
        set ``entry.value`` to keep an object, or to None to drop it."""
        with self._lock:
            self._expire()
            entry = self._entries.setdefault(key, _Entry())
        with entry.lock:
            entry.used = time.monotonic()
            try:
                yield entry
            finally:
                entry.used = time.monotonic()
                if entry.value is None:
                    with self._lock:
                        if self._entries.get(key) is entry:
                            del self._entries[key]

    def pop(self, key: str) -> T | None:
        """Remove ``key``'s object (waiting for a call that uses it) and return it."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        with entry.lock:
            value, entry.value = entry.value, None
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
        return value

    def _expire(self) -> None:
        """Drop idle entries (lock held); an entry in use is never idle."""
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if now - entry.used > self._idle_s and entry.lock.acquire(blocking=False):
                try:
                    value, entry.value = entry.value, None
                    del self._entries[key]
                finally:
                    entry.lock.release()
                if value is not None and self._on_drop is not None:
                    self._on_drop(value)
