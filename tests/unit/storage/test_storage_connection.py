"""URL selection and redaction (no server needed)."""

from __future__ import annotations

import pytest

from storage.connection import connect, redacted, redis_url_from_env
from storage.errors import CoordinationError


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"REDIS_URL": "redis://a"}, "redis://a"),
        ({"SAPIENS_STREAM_REDIS_URL": "redis://b", "REDIS_URL": "redis://a"}, "redis://b"),
        ({"SAPIENS_STREAM_REDIS_URL": "  ", "REDIS_URL": "redis://a"}, "redis://a"),
    ],
)
def test_env_precedence(env: dict[str, str], expected: str | None) -> None:
    assert redis_url_from_env(env) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1", "rediss://user:***@h:1"),
        ("unix:///tmp/r.sock?password=pw&db=1", "unix:///tmp/r.sock?password=***&db=1"),
        ("redis://h:1", "redis://h:1"),
    ],
)
def test_redacted(url: str, expected: str) -> None:
    assert redacted(url) == expected


def test_bad_scheme_is_a_clear_error() -> None:
    with pytest.raises(CoordinationError, match=r"unsupported Redis URL 'http://:\*\*\*@x'"):
        connect("http://:secret@x")


def test_unreachable_server_hides_password(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CoordinationError, match=r"cannot reach Redis at redis://:\*\*\*@127") as e:
        connect("redis://:topsecret@127.0.0.1:1/0")
    assert "topsecret" not in str(e.value)


def test_no_url_and_no_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAPIENS_STREAM_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(CoordinationError, match="no Redis URL is configured"):
        connect(None)
