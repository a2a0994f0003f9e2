"""Connecting to Redis: a configured URL always wins, else the embedded server.

URLs: ``redis://[:password@]host[:port][/db]``, ``rediss://`` (TLS; certificate options as
query parameters, e.g. ``?ssl_cert_reqs=required&ssl_ca_certs=/path/ca.pem``) and
``unix:///path/to.sock?password=...``. User names and passwords come from the URL (AUTH).

Example:
    >>> redis_url_from_env({"REDIS_URL": "redis://h:6379/0"})
    'redis://h:6379/0'
    >>> redacted("redis://:s3cret@127.0.0.1:6379/0")
    'redis://:***@127.0.0.1:6379/0'
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from storage.embedded import EmbeddedServer
from storage.errors import CoordinationError

__all__ = ["ENV_VARS", "RedisConnection", "connect", "redacted", "redis_url_from_env"]

logger = logging.getLogger(__name__)

ENV_VARS = ("SAPIENS_STREAM_REDIS_URL", "REDIS_URL")
_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Return the first non-empty of SAPIENS_STREAM_REDIS_URL, REDIS_URL, or None."""
    env = os.environ if environ is None else environ
    for name in ENV_VARS:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def redacted(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    url = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisConnection:
    """A connected client and, when embedded, the server handle.

    Attributes:
        client: redis-py client (bytes replies; values are msgpack).
        url: The URL used, password redacted.
        server: The embedded server, or None for a configured URL.
    """

    client: redis.Redis
    url: str
    server: EmbeddedServer | None = None

    def close(self) -> None:
        """Close the client and stop the embedded server if this process owns it."""
        self.client.close()
        if self.server is not None:
            self.server.close()

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client(url: str) -> redis.Redis:
    if not url.startswith(_SCHEMES):
        msg = f"unsupported Redis URL {redacted(url)!r}: expected one of {_SCHEMES}"
        raise CoordinationError(msg)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=5.0, socket_timeout=30.0, health_check_interval=30
        )
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as e:
        msg = f"cannot reach Redis at {redacted(url)}: {e}"
        raise CoordinationError(msg) from e
    except ValueError as e:
        msg = f"invalid Redis URL {redacted(url)!r}: {e}"
        raise CoordinationError(msg) from e
    return client


def connect(
    url: str | None = None,
    *,
    root: str | Path | None = None,
    detach: bool = False,
) -> RedisConnection:
    """Connect to ``url``, else the URL from the environment, else the embedded server.

    Args:
        url: Explicit Redis URL; wins over everything.
        root: Output root holding the embedded server's data (needed when no URL is set).
        detach: Keep an embedded server started here alive after this process exits.

    Raises:
        CoordinationError: If the server cannot be reached or the URL is invalid.
        EmbeddedServerError: If the embedded server cannot be started.
    """
    chosen = url or redis_url_from_env()
    if chosen is not None:
        logger.debug("using Redis at %s", redacted(chosen))
        return RedisConnection(client=_client(chosen), url=redacted(chosen))
    if root is None:
        msg = (
            "no Redis URL is configured (set SAPIENS_STREAM_REDIS_URL or REDIS_URL) and no "
            "output root was given for the embedded server"
        )
        raise CoordinationError(msg)
    server = EmbeddedServer.ensure(root, detach=detach)
    return RedisConnection(client=_client(server.url), url=redacted(server.url), server=server)
