"""Starting or joining Ray for a driver (``run``, ``serve``), safely.

A local cluster started here:

* listens on the loopback interface only: Ray resolves "localhost" to the machine's routable
  address, and binds its servers there and on every interface, unless clusters are switched
  off for the machine (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), which is what a single-machine
  cluster wants;
* uses token authentication with a token file that only its owner can read (Ray writes its
  default ``~/.ray/auth_token`` world-readable);
* is never replaced behind the driver's back: Ray's automatic ``ray.init()`` on the first API
  call after a shutdown (during interpreter exit, after SIGTERM) would start a new cluster or
  join whichever one the machine last ran, so it is switched off for the process;
* exports Prometheus metrics on ``SAPIENS_STREAM_METRICS_PORT`` when that is set.

Joining a cluster by address (``--address``, ``RAY_ADDRESS``) leaves that cluster's own
network and authentication settings alone.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import stat
import sys
import threading
from pathlib import Path

__all__ = ["ensure_ray", "exit_on_sigterm", "secure_token_file"]

logger = logging.getLogger(__name__)


def _no_auto_init() -> None:
    os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
    hook = sys.modules.get("ray._private.auto_init_hook")
    if hook is not None:  # already imported: it read the variable at import
        hook.enable_auto_connect = False  # type: ignore[attr-defined]


def _loopback_only() -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # already imported: it read the variable at import
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


def secure_token_file(path: Path | None = None) -> Path | None:
    """Make Ray's token file private (0600), creating it with a new token if missing.

    Does nothing when authentication is switched off or the token comes from
    ``RAY_AUTH_TOKEN``. Returns the file, or None when none is used.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    if path is None:
        configured = os.environ.get("RAY_AUTH_TOKEN_PATH")
        path = Path(configured) if configured else Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning("%s was readable by others (mode %o); made it 0600", path, mode)
            path.chmod(0o600)
        return path
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


#: Smallest object store of a local cluster.
MIN_OBJECT_STORE = 256 * 2**20
#: Largest share of this machine's memory a local cluster's object store takes.
MAX_OBJECT_STORE_SHARE = 0.3


def object_store_bytes(batch_bytes: int, batches: int) -> int:
    """Object store of a local cluster that holds ``batches`` batches of ``batch_bytes`` at
    once, twice over (a batch's frames and its results live side by side until its commit,
    and Ray spills to disk when the store fills, several times slower): at least 256 MiB, at
    most 30% of this machine's memory."""
    want = 2 * max(0, batch_bytes) * max(1, batches)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: keep the floor
        return MIN_OBJECT_STORE
    return int(max(MIN_OBJECT_STORE, min(want, MAX_OBJECT_STORE_SHARE * memory)))


#: The port a local cluster exports its Prometheus metrics on (Ray's ``--metrics-export-port``;
#: unset: a free port, which nothing announces, since a local cluster runs no dashboard).
METRICS_PORT_ENV = "SAPIENS_STREAM_METRICS_PORT"


def _metrics_port() -> int | None:
    raw = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{METRICS_PORT_ENV}={raw!r} is not a port number")
    return int(raw)


def ensure_ray(address: str | None = None, *, store_bytes: int | None = None) -> None:
    """Join ``address`` / ``RAY_ADDRESS``, or start a local cluster sized to this machine,
    bound to loopback, with a private token file, exporting metrics on the port of
    ``SAPIENS_STREAM_METRICS_PORT`` when set. ``store_bytes``: the local cluster's object
    store (see :func:`object_store_bytes`; default the floor)."""
    _no_auto_init()
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    _loopback_only()
    secure_token_file()
    ray.init(
        address="local",  # a new local cluster, even if another runs on this machine
        num_cpus=max(4, os.cpu_count() or 1),
        include_dashboard=False,
        object_store_memory=max(MIN_OBJECT_STORE, store_bytes or 0),
        log_to_driver=False,
        _metrics_export_port=_metrics_port(),
    )


def exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit of the main thread (``SystemExit``), so that a service
    stopped by its supervisor runs its ``finally`` blocks and shuts Ray down, instead of the
    abort Ray's own handler performs. Call it after :func:`ensure_ray` (Ray installs its handler
    while it connects); does nothing outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum: int, _frame: object) -> None:
        logger.warning("received signal %d: shutting down", signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
