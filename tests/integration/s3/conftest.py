"""A real S3-compatible server for the tests: moto's, in this process, on 127.0.0.1.

Clients find it as they find AWS in production: through ``AWS_ENDPOINT_URL`` and the
credential variables, so the code under test gets no test-only options.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("moto.server", reason="needs moto[server]: pip install -e '.[test]'")
pytest.importorskip("s3fs", reason="needs s3fs: pip install -e '.[test]'")

from moto.server import ThreadedMotoServer

BUCKET = "videos"


@dataclass(frozen=True, slots=True)
class S3:
    """The running server: its endpoint and an s3fs client of it."""

    endpoint: str
    fs: Any

    def url(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"


def forget_clients() -> None:
    """Drop fsspec's cached S3 clients: each caches the endpoint it was made with. The
    asynchronous ones (zarr's) have no finalizer: their HTTP sessions are closed here, on
    zarr's event loop, where they were opened."""
    import s3fs
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        creator = getattr(fs, "_s3creator", None)
        if fs.asynchronous and creator is not None:
            sync(creator.__aexit__(None, None, None))
    s3fs.S3FileSystem.clear_instance_cache()


def start_server() -> tuple[ThreadedMotoServer, str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def reset_server(endpoint: str) -> None:
    """Forget every bucket: moto keeps them per process, not per server, so a module's
    buckets would otherwise meet the next module's."""
    from urllib.request import Request, urlopen

    with urlopen(Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10):
        pass


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """moto's S3 server with one bucket, ``videos``; the AWS variables point at it."""
    import s3fs

    server, endpoint = start_server()
    with pytest.MonkeyPatch.context() as env:
        for name, value in (
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        forget_clients()
        reset_server(endpoint)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        try:
            yield S3(endpoint=endpoint, fs=fs)
        finally:
            forget_clients()
            server.stop()
