"""Key builders and identifier validation."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from typing import Any

import pytest

from storage._keys import Keys, validate_id, validate_worker_id
from storage.errors import InvalidJobIdError


@pytest.mark.parametrize(
    ("value", "expectation"),
    [
        ("j0192-abc_1", does_not_raise()),
        ("a" * 64, does_not_raise()),
        ("a" * 65, pytest.raises(InvalidJobIdError, match="1-64 characters")),
        ("", pytest.raises(InvalidJobIdError, match="invalid")),
        ("../etc", pytest.raises(InvalidJobIdError, match=r"'\.\./etc' is invalid")),
        ("a/b", pytest.raises(InvalidJobIdError)),
        ("a:b", pytest.raises(InvalidJobIdError)),
        ("a{b}", pytest.raises(InvalidJobIdError)),
        ("a*", pytest.raises(InvalidJobIdError)),
        ("-a", pytest.raises(InvalidJobIdError)),
        ("a b", pytest.raises(InvalidJobIdError)),
        ("a\n", pytest.raises(InvalidJobIdError)),
        (12, pytest.raises(InvalidJobIdError, match="job id 12 is invalid")),
        (None, pytest.raises(InvalidJobIdError)),
    ],
)
def test_validate_id(value: Any, expectation: Any) -> None:
    with expectation:
        assert validate_id(value) == value


def test_invalid_job_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid"):
        validate_id("x/y")


def test_worker_ids_allow_dots() -> None:
    assert validate_worker_id("host.example-1234") == "host.example-1234"
    with pytest.raises(InvalidJobIdError, match="worker id"):
        validate_worker_id("host:1")


def test_keys_share_one_prefix() -> None:
    k = Keys("acme.test")
    built = [
        k.job("j1"), k.events("j1"), k.queue, k.fence, k.all_jobs, k.state("queued"),
        k.worker("w.1"), k.idempotency("any string: / * {}"),
    ]  # fmt: skip
    assert all(key.startswith("acme.test:v1:") for key in built)
    assert k.events("j1") == "acme.test:v1:job:j1:events"
    assert len(set(built)) == len(built)
    assert len(k.state_keys()) == 5


def test_idempotency_key_is_hashed_and_bounded() -> None:
    k = Keys()
    assert k.idempotency("a") != k.idempotency("b")
    assert ":" not in k.idempotency("x:y:z").removeprefix(f"{k.base}:idem:")
    with pytest.raises(InvalidJobIdError, match="client key"):
        k.idempotency("")
    with pytest.raises(InvalidJobIdError, match="client key"):
        k.idempotency("x" * 1025)


@pytest.mark.parametrize("prefix", ["", "a:b", "x" * 65, "a b"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(InvalidJobIdError, match="key prefix"):
        Keys(prefix)


def test_unknown_state() -> None:
    with pytest.raises(ValueError, match="unknown job state 'done'"):
        Keys().state("done")
