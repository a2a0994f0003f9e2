"""The servers every conformance suite of this folder runs on, as mixins that give a suite its
``url`` fixture: ``class TestEmbeddedValkey(EmbeddedValkey, SomeSuite): pass``; and
:class:`QueueSuite`, the base of the suites that need a coordinator under a fresh prefix."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from storage_procs import delete_prefix

from storage import Coordinator, CoordinatorConfig, EmbeddedServer


class QueueSuite:
    """A suite's ``coord``: a coordinator on the server of ``url`` (a mixin gives it) under a
    prefix of its own, whose keys are deleted afterwards."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def coord(self, url: str, prefix: str) -> Iterator[Coordinator]:
        client = redis.Redis.from_url(url)
        try:
            yield Coordinator(client, CoordinatorConfig(prefix=prefix))
        finally:
            delete_prefix(client, prefix)
            client.close()


class EmbeddedValkey:
    """The embedded Valkey the project starts when no Redis URL is given."""

    @pytest.fixture
    def url(self, embedded_server: EmbeddedServer) -> str:
        return embedded_server.url


class LocalRedis7:
    """A private redis-server 7.0 started for the session, when one is installed."""

    @pytest.fixture
    def url(self, local_redis_url: str) -> str:
        return local_redis_url


class SystemRedis:
    """The system Redis that SAPIENS_STREAM_TEST_REDIS_URL names (CI sets it)."""

    @pytest.fixture
    def url(self) -> str:
        url = os.environ.get("SAPIENS_STREAM_TEST_REDIS_URL")
        if not url:
            pytest.skip("set SAPIENS_STREAM_TEST_REDIS_URL to test against a system Redis")
        return url
