"""The servers every conformance suite of this folder runs on, as mixins that give a suite its
``url`` fixture: ``class TestEmbeddedValkey(EmbeddedValkey, SomeSuite): pass``."""

from __future__ import annotations

import os

import pytest

from storage import EmbeddedServer


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
