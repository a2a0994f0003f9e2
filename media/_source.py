"""Opening a video source: local files checked before FFmpeg sees them, network URLs with
timeouts, objects in object stores (``s3://``...) as file objects (``media/_remote.py``), and
every failure turned into one :class:`~media.errors.DecodeError` line that names the source
(passwords in URLs hidden) and the cause.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import av
import av.error

from media._remote import OBJECT_STORE_SCHEMES, open_object
from media.errors import (
    DecodeError,
    SourceNotFoundError,
    SourceNotReadableError,
    SourceUnreachableError,
    UnreadableMediaError,
)

__all__ = [
    "NETWORK_ERRORS",
    "OPEN_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "display_name",
    "is_live",
    "network_error",
    "open_container",
]

#: Default seconds a network source may take to open.
OPEN_TIMEOUT_S = 10.0
#: Default seconds a network source may stay silent while reading.
READ_TIMEOUT_S = 30.0
#: What PyAV raises when a network source times out or drops the connection.
NETWORK_ERRORS = (av.error.ExitError, TimeoutError, ConnectionError)

_LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "srt", "udp", "tcp"})
_HTTP_SCHEMES = frozenset({"http", "https"})
_LIVE_ANALYZE_US = 1_000_000
#: URL schemes opened as network sources; ``file://`` is a local path, anything else is refused
#: (FFmpeg's wrapper protocols such as ``crypto+file://`` would bypass the local-file checks).
_NETWORK_SCHEMES = _LIVE_SCHEMES | _HTTP_SCHEMES | {"ftp"}
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _scheme(source: str) -> str:
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", source)
    return match.group(1).lower() if match else ""


def is_live(source: str) -> bool:
    """Whether ``source`` is a live protocol (RTSP, RTMP, UDP, SRT...) that cannot seek."""
    return _scheme(source) in _LIVE_SCHEMES


def display_name(source: str | os.PathLike[str]) -> str:
    """``source`` as text for messages and logs, with any URL password replaced by ``***``."""
    text = os.fspath(source)
    if not _scheme(text):
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _protocol_options(source: str, open_timeout_s: float, read_timeout_s: float) -> dict[str, str]:
    """FFmpeg protocol options so that a silent server fails in seconds instead of hanging."""
    scheme, read_us = _scheme(source), str(int(read_timeout_s * 1e6))
    # A live stream is read for 5 s before its first frame by default, to learn its format;
    # 1 s finds an H.264 stream's size and rate (and each reconnect waits that much less).
    live = {"analyzeduration": str(_LIVE_ANALYZE_US)}
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp_transport": "tcp", "timeout": read_us, **live}
    if scheme in _LIVE_SCHEMES:
        return {"rw_timeout": read_us, **live}
    if scheme in _NETWORK_SCHEMES:
        return {"rw_timeout": read_us}
    return {}


def _open_target(text: str, name: str) -> str:
    """What FFmpeg is given for ``text``: a network URL as is; a plain path or ``file://`` URL
    as the absolute path of a readable regular file, checked here (FFmpeg would block on a
    FIFO, read a device forever, or read another file through a ``proto:`` prefix).

    Raises:
        SourceNotFoundError: no such file, not a regular file, or a file URL of another host.
        SourceNotReadableError: the file may not be read.
        UnreadableMediaError: an empty file, or a URL scheme that is not supported.
    """
    scheme = _scheme(text)
    if scheme in _NETWORK_SCHEMES:
        return text
    if scheme and scheme != "file":
        msg = (
            f"cannot open video {name!r}: unsupported protocol {scheme!r}; expected a local "
            "path, a file:// URL, an http(s), ftp, rtsp, rtmp, srt, udp or tcp URL, or an "
            f"object store URL ({', '.join(OBJECT_STORE_SCHEMES)})"
        )
        raise UnreadableMediaError(msg)
    path = _file_url_path(text, name) if scheme else Path(text)
    _check_local_file(path, name)
    return os.path.abspath(path)  # a leading "/" keeps FFmpeg from reading "x:" as a protocol


def _file_url_path(url: str, name: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        msg = (
            f"cannot open video {name!r}: a file URL must name a path on this machine, as "
            "file:///path/to/video.mp4 (with '?' and '#' percent-encoded)"
        )
        raise SourceNotFoundError(msg)
    return Path(unquote(parts.path))


def open_container(
    source: str | os.PathLike[str], *, open_timeout_s: float, read_timeout_s: float
) -> av.container.InputContainer:
    """Open ``source`` for reading.

    Raises:
        SourceNotFoundError: a local path (or ``file://`` URL) that does not exist or is not a
            regular file.
        SourceNotReadableError: a local file this process may not read.
        SourceUnreachableError: a URL that refuses, times out or cannot be resolved.
        UnreadableMediaError: bytes FFmpeg cannot read as media (empty, not media, no header),
            or an object store URL whose fsspec package is not installed.
    """
    text, name = os.fspath(source), display_name(source)
    scheme = _scheme(text)
    target: str | io.RawIOBase
    if scheme in OBJECT_STORE_SCHEMES:
        target = open_object(
            text, name, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s
        )
    else:
        target = _open_target(text, name)
    try:
        return _open_av(target, text, name, open_timeout_s, read_timeout_s)
    except BaseException:
        if not isinstance(target, str):
            target.close()
        raise


def _open_av(
    target: str | io.RawIOBase, text: str, name: str, open_timeout_s: float, read_timeout_s: float
) -> av.container.InputContainer:
    remote = _scheme(text) not in ("", "file")
    began = time.monotonic()
    try:
        return av.open(
            target,
            mode="r",
            container_options=_protocol_options(text, open_timeout_s, read_timeout_s),
            timeout=(open_timeout_s, read_timeout_s),
        )
    except FileNotFoundError as e:
        msg = f"cannot open video {name!r}: not found ({e.strerror}); check the path or URL"
        raise SourceNotFoundError(msg) from e
    except av.error.HTTPNotFoundError as e:
        msg = f"cannot open video {name!r}: the server answered 404 Not Found; check the URL"
        raise SourceNotFoundError(msg) from e
    except (av.error.HTTPError, av.error.HTTPClientError) as e:
        msg = (
            f"cannot open video {name!r}: the server refused it ({_cause(e)}); check the URL "
            "and that it may be read"
        )
        raise SourceUnreachableError(msg) from e
    except av.error.ProtocolNotFoundError as e:
        msg = (
            f"cannot open video {name!r}: FFmpeg has no protocol for {_scheme(text)!r} URLs; "
            "expected a local path or an http(s), rtsp or rtmp URL"
        )
        raise UnreadableMediaError(msg) from e
    except NETWORK_ERRORS as e:
        msg = (
            f"cannot open video {name!r}: {_cause(e)} (open timeout {open_timeout_s:g} s); "
            "check that the server is up and the URL is right"
        )
        raise SourceUnreachableError(msg) from e
    except (av.error.FFmpegError, OSError) as e:
        waited = time.monotonic() - began
        if remote and waited >= 0.9 * min(open_timeout_s, read_timeout_s):
            msg = (
                f"cannot open video {name!r}: no usable answer within {waited:.1f} s "
                f"({_cause(e)}); check that the server is up and the URL is right"
            )
            raise SourceUnreachableError(msg) from e
        msg = (
            f"cannot open video {name!r}: {_cause(e)}; expected a media container FFmpeg can "
            "read (the file may be truncated before its header/index, or not a video)"
        )
        raise UnreadableMediaError(msg) from e


def _check_local_file(path: Path, name: str) -> None:
    try:
        status = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        msg = f"cannot open video {name!r}: no such file; check the path"
        raise SourceNotFoundError(msg) from None
    except PermissionError:
        msg = f"cannot open video {name!r}: permission denied; check the path's permissions"
        raise SourceNotReadableError(msg) from None
    except (OSError, ValueError) as e:  # a name too long, a symlink loop, a NUL byte
        msg = f"cannot open video {name!r}: not a usable path ({_cause(e)}); check the path"
        raise SourceNotFoundError(msg) from None
    if not stat.S_ISREG(status.st_mode):
        kind = next((what for test, what in _FILE_KINDS if test(status.st_mode)), "unknown")
        msg = f"cannot open video {name!r}: not a regular file but {kind}; expected a video file"
        raise SourceNotFoundError(msg)
    if not os.access(path, os.R_OK):
        msg = f"cannot open video {name!r}: permission denied; check the file's permissions"
        raise SourceNotReadableError(msg)
    if status.st_size == 0:
        msg = f"cannot open video {name!r}: the file is empty (0 bytes)"
        raise UnreadableMediaError(msg)


def _cause(error: BaseException) -> str:
    """One short line: the error's type and its C-level message, without FFmpeg's log."""
    if isinstance(error, av.error.ExitError):  # how PyAV's timeout interrupts FFmpeg
        return "timed out"
    text = " ".join(str(getattr(error, "strerror", None) or error).split())
    return f"{type(error).__name__}: {text[:200]}"


def network_error(error: BaseException, name: str, index: int | None = None) -> DecodeError:
    """A mid-stream network failure as a :class:`SourceUnreachableError`."""
    where = "" if index is None else f" at decode index {index}"
    msg = f"video {name!r} stopped answering{where}: {_cause(error)}; retry or resume the job"
    return SourceUnreachableError(msg)
