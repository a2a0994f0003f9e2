"""Result stores (Zarr v3) and job coordination (Redis) for sapiens-stream.

This package is the only code that touches Zarr or Redis. It imports neither torch nor ray.

* Results: :class:`StoreSpec` -> :class:`Writer` (one per job) -> :func:`open_result`.
  Per-person stores (schema v2) compose frame maps on read: :func:`compose_frame_maps`.
* Coordination: :func:`connect` -> :class:`Coordinator` (+ :class:`HeartbeatThread`).
"""

from __future__ import annotations

from storage._keys import new_job_id
from storage._store import check_output_root
from storage.compose import ComposedMaps, compose_frame_maps
from storage.connection import RedisConnection, connect, redacted, redis_url_from_env
from storage.coordination import Coordinator
from storage.embedded import EmbeddedServer, stop_embedded
from storage.errors import (
    CoordinationError,
    EmbeddedServerError,
    FencingError,
    FrameNotCommittedError,
    InvalidJobIdError,
    InvalidTransitionError,
    InvalidValueError,
    JobNotFoundError,
    LeaseLostError,
    SchemaMismatchError,
    StaleOwnerError,
    StorageError,
    StoreNotFoundError,
)
from storage.frame import FrameResult
from storage.heartbeat import HeartbeatThread
from storage.jobs import (
    TERMINAL_STATES,
    CoordinatorConfig,
    JobEvent,
    JobLease,
    JobRecord,
    JobState,
    SubmitResult,
)
from storage.provenance import ModelProvenance
from storage.reader import ResultReader, StoreState, open_result, store_state
from storage.reopen import reopen_failed
from storage.results import (
    FrameData,
    FrameTable,
    PersonPatches,
    Persons,
    StoreSummary,
    Track,
)
from storage.resume import ResumeState
from storage.runlock import JobRunLock, StoreBusyError
from storage.schema import (
    DEFAULT_MAX_PERSONS,
    DENSE_TASKS,
    FRAME_STATUS,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    TASKS,
    FrameStatus,
    StoreSpec,
    Task,
    ZarrLayout,
    output_size,
)
from storage.writer import BlockWriter, Writer

__all__ = [
    "DEFAULT_MAX_PERSONS",
    "DENSE_TASKS",
    "FRAME_STATUS",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "TASKS",
    "TERMINAL_STATES",
    "BlockWriter",
    "ComposedMaps",
    "CoordinationError",
    "Coordinator",
    "CoordinatorConfig",
    "EmbeddedServer",
    "EmbeddedServerError",
    "FencingError",
    "FrameData",
    "FrameNotCommittedError",
    "FrameResult",
    "FrameStatus",
    "FrameTable",
    "HeartbeatThread",
    "InvalidJobIdError",
    "InvalidTransitionError",
    "InvalidValueError",
    "JobEvent",
    "JobLease",
    "JobNotFoundError",
    "JobRecord",
    "JobRunLock",
    "JobState",
    "LeaseLostError",
    "ModelProvenance",
    "PersonPatches",
    "Persons",
    "RedisConnection",
    "ResultReader",
    "ResumeState",
    "SchemaMismatchError",
    "StaleOwnerError",
    "StorageError",
    "StoreBusyError",
    "StoreNotFoundError",
    "StoreSpec",
    "StoreState",
    "StoreSummary",
    "SubmitResult",
    "Task",
    "Track",
    "Writer",
    "ZarrLayout",
    "check_output_root",
    "compose_frame_maps",
    "connect",
    "new_job_id",
    "open_result",
    "output_size",
    "redacted",
    "redis_url_from_env",
    "reopen_failed",
    "stop_embedded",
    "store_state",
]
