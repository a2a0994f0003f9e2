"""Videos in object stores (``s3://``, ``gs://``, ``az://``...), read through fsspec.

FFmpeg has no protocol for these URLs, so the object is opened with fsspec (s3fs, gcsfs or
adlfs, each installed on its own) as a seekable file object that PyAV reads from: the probe,
the limits, resume seeks and the error lines are those of any other source. Credentials and
endpoints come from each library's usual configuration (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, an instance role...).

Failures become one :class:`~media.errors.DecodeError` line naming the URL: a missing object or
bucket :class:`SourceNotFoundError`, a refused one :class:`SourceNotReadableError`, an empty
one :class:`UnreadableMediaError`, a store that does not answer
:class:`SourceUnreachableError`. A read that fails mid-video raises :class:`ConnectionError`
(with the backend's error as its cause), which the readers report as the source having stopped
answering at that decode index, as they do for http(s) sources.
"""

from __future__ import annotations

import io
import re
from typing import Any

from media.errors import (
    SourceNotFoundError,
    SourceNotReadableError,
    SourceUnreachableError,
    UnreadableMediaError,
)

__all__ = ["OBJECT_STORE_SCHEMES", "open_object"]

#: URL schemes read through fsspec, with the package that provides each.
OBJECT_STORE_SCHEMES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
#: Bytes fetched per request. PyAV reads in small pieces; one request serves many of them
#: without fetching far past what a probe or a short job needs.
BLOCK_BYTES = 4 * 2**20
_S3_ATTEMPTS = 3  # botocore "standard" retries: a store that refuses fails in about a second


def _options(scheme: str, open_timeout_s: float, read_timeout_s: float) -> dict[str, Any]:
    """fsspec storage options that bound how long a silent store can hold a read."""
    if OBJECT_STORE_SCHEMES[scheme] != "s3fs":
        return {}
    return {
        "config_kwargs": {
            "connect_timeout": open_timeout_s,
            "read_timeout": read_timeout_s,
            "retries": {"max_attempts": _S3_ATTEMPTS, "mode": "standard"},
        }
    }


def _cause(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "strerror", None) or error).split())
    return f"{type(error).__name__}: {text[:200]}"


def open_object(
    url: str, name: str, *, open_timeout_s: float, read_timeout_s: float
) -> io.RawIOBase:
    """Open the object at ``url`` for PyAV: a seekable, read-only file object.

    Args:
        url: an URL of one of :data:`OBJECT_STORE_SCHEMES`.
        name: ``url`` as messages show it.
        open_timeout_s: seconds to wait for the store to accept a connection.
        read_timeout_s: seconds to wait for data from it.

    Raises:
        UnreadableMediaError: the scheme's fsspec package is not installed, or the object is
            empty.
        SourceNotFoundError: no such object or bucket, or the URL names a prefix.
        SourceNotReadableError: the store refuses access.
        SourceUnreachableError: the store does not answer.
    """
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", url)
    key = scheme.group(1).lower() if scheme else ""
    package = OBJECT_STORE_SCHEMES[key]
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **_options(key, open_timeout_s, read_timeout_s))
    except ImportError as e:
        msg = (
            f"cannot open video {name!r}: reading {key}:// URLs needs {package}; install with: "
            f"pip install {package}" + (" (or 'sapiens-stream[s3]')" if package == "s3fs" else "")
        )
        raise UnreadableMediaError(msg) from e
    size = _object_size(fs, path, name)
    try:
        raw = fs.open(path, "rb", block_size=BLOCK_BYTES, cache_type="readahead", size=size)
    except Exception as e:  # any fsspec backend, each with its own error types
        raise _open_error(e, name) from e
    return _ObjectFile(raw, size)


def _object_size(fs: Any, path: str, name: str) -> int:
    try:
        info = fs.info(path)
    except Exception as e:  # any fsspec backend, each with its own error types
        raise _open_error(e, name) from e
    if info.get("type") == "directory":
        msg = f"cannot open video {name!r}: it names a prefix (a directory), not an object"
        raise SourceNotFoundError(msg)
    size = int(info.get("size") or 0)
    if size == 0:
        msg = f"cannot open video {name!r}: the object is empty (0 bytes)"
        raise UnreadableMediaError(msg)
    return size


def _open_error(error: Exception, name: str) -> Exception:
    if isinstance(error, FileNotFoundError):
        msg = f"cannot open video {name!r}: no such object or bucket; check the URL"
        return SourceNotFoundError(msg)
    if isinstance(error, PermissionError):
        msg = (
            f"cannot open video {name!r}: access denied ({_cause(error)}); check the "
            "credentials and the bucket's policy"
        )
        return SourceNotReadableError(msg)
    msg = (
        f"cannot open video {name!r}: the object store did not answer ({_cause(error)}); "
        "check the endpoint, the network and the credentials"
    )
    return SourceUnreachableError(msg)


class _ObjectFile(io.RawIOBase):
    """A read-only object as PyAV reads it: every backend failure is a ConnectionError."""

    def __init__(self, raw: Any, size: int) -> None:
        super().__init__()
        self._raw, self._size = raw, size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._raw.read(len(buffer))
        except Exception as e:  # any backend's error: the store stopped answering
            raise ConnectionError(_cause(e)) from e
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return int(self._raw.seek(offset, whence))
        except ValueError:
            raise
        except Exception as e:  # any backend's error
            raise ConnectionError(_cause(e)) from e

    def tell(self) -> int:
        return int(self._raw.tell())

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
