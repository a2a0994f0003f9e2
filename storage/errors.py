"""Exceptions raised by :mod:`storage`.

Every exception derives from :class:`StorageError` and, where a builtin fits, from that builtin
too, so callers may catch either (``except KeyError`` works for a missing job).
"""

from __future__ import annotations

__all__ = [
    "CoordinationError",
    "EmbeddedServerError",
    "FencingError",
    "FrameNotCommittedError",
    "InvalidJobIdError",
    "InvalidTransitionError",
    "InvalidValueError",
    "JobNotFoundError",
    "LeaseLostError",
    "SchemaMismatchError",
    "StaleOwnerError",
    "StorageError",
    "StoreNotFoundError",
]


class StorageError(Exception):
    """Base class of every error raised by the storage package."""


class SchemaMismatchError(StorageError, ValueError):
    """Data or an existing store does not match the expected schema or layout."""


class StoreNotFoundError(StorageError, FileNotFoundError):
    """No result store exists at the given path or URL."""


class StaleOwnerError(StorageError):
    """A result store's writer no longer owns it: a writer with a larger fencing token took
    the store over (or the writer's token is older than the one the store records).

    Nothing was written by the refused call, and the writer refuses every later call; the job
    belongs to the new owner.
    """


class FrameNotCommittedError(StorageError, IndexError):
    """A read asked for frames the store has not committed (yet)."""


class InvalidValueError(StorageError, ValueError):
    """A value cannot be encoded to, or decoded from, msgpack, or is malformed."""


class InvalidJobIdError(StorageError, ValueError):
    """A job, worker or client identifier has characters that could escape a key or path."""


class JobNotFoundError(StorageError, KeyError):
    """No job with the given id exists in the registry (never created or expired)."""

    def __str__(self) -> str:
        # KeyError quotes its argument; keep the message readable instead.
        return str(self.args[0]) if self.args else ""


class CoordinationError(StorageError):
    """Redis coordination failed in a way that is not a state or fencing conflict."""


class InvalidTransitionError(CoordinationError):
    """A job state transition was refused because the job is not in the expected state."""


class LeaseLostError(CoordinationError):
    """A worker's fencing token is stale: another owner reclaimed or finished the job.

    The worker must stop working on the job at once and must not commit anything more.
    """


FencingError = LeaseLostError
"""Alias of :class:`LeaseLostError` (a lost lease is detected as a fencing-token mismatch)."""


class EmbeddedServerError(StorageError, RuntimeError):
    """The embedded Valkey server could not be started, reached or stopped."""
