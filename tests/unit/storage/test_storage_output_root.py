"""An output root that is empty or the filesystem root is refused before anything is written."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

import storage._store
from storage import InvalidValueError, StoreSpec, Writer, check_output_root

SPEC = StoreSpec.for_source(24, 40, num_keypoints=17, frames_per_shard=4)


def refused(why: str) -> AbstractContextManager[object]:
    return pytest.raises(InvalidValueError, match=why)


@pytest.mark.parametrize(
    ("root", "expectation"),
    [
        ("", refused("output root is empty")),
        ("  ", refused("output root is empty")),
        ("/", refused("is the filesystem root")),
        ("//", refused("is the filesystem root")),
        ("/tmp/..", refused("is the filesystem root")),
        ("/tmp/../../", refused("is the filesystem root")),
        ("file:///", refused("is the filesystem root")),
        ("file://", refused("is the filesystem root")),
        ("s3://", refused("names no bucket or path")),
        ("s3:///", refused("names no bucket or path")),
        ("out/results", nullcontext()),
        ("/tmp/results", nullcontext()),
        ("file:///tmp/results", nullcontext()),
        ("s3://bucket/results", nullcontext()),
        ("memory://results", nullcontext()),
    ],
)
def test_output_roots(root: str, expectation: AbstractContextManager[object]) -> None:
    with expectation:
        assert check_output_root(root) == root.strip()


def test_a_link_to_the_filesystem_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/")
    with refused("is the filesystem root"):
        check_output_root(tmp_path / "link")


@pytest.mark.parametrize("root", ["", "/", "//", "/tmp/../"])
def test_no_store_is_created_directly_in_the_filesystem_root(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def touched(*args: object) -> None:
        raise AssertionError(f"a store under root {root!r} was about to be written")

    # Fail before anything is written to /, should the check ever be missing.
    monkeypatch.setattr(storage._store, "StoreLock", touched)
    monkeypatch.setattr(storage._store, "create_root", touched)
    url = f"{root.rstrip('/')}/sapiens-stream-test.zarr"  # how flows builds a job's store URL
    with refused("is the filesystem root"):
        Writer.create(url, SPEC, job={"job_id": "r"})
