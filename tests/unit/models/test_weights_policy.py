"""The allow-list of weight locations a service accepts (``WeightsPolicy``)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from models import CheckpointError, WeightsPolicy


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``allowed/`` (a checkpoint, a subdirectory, links in and out), ``outside/`` (a file)."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "w.pth").write_bytes(b"w")
    (allowed / "sub" / "v.pt2").write_bytes(b"v")
    (outside / "evil.pth").write_bytes(b"e")
    (allowed / "escape.pth").symlink_to(outside / "evil.pth")
    (allowed / "escape_dir").symlink_to(outside, target_is_directory=True)
    (allowed / "inner.pth").symlink_to(allowed / "sub" / "v.pt2")
    (tmp_path / "alias").symlink_to(allowed, target_is_directory=True)
    return tmp_path


def _ok() -> AbstractContextManager[object]:
    return nullcontext()


def _refused(match: str) -> AbstractContextManager[object]:
    return pytest.raises(CheckpointError, match=match)


CASES = [
    ("allowed/w.pth", _ok()),
    ("allowed/sub/v.pt2", _ok()),
    ("allowed", _ok()),
    ("allowed/sub/../w.pth", _ok()),
    ("allowed/inner.pth", _ok()),  # a link that stays inside
    ("alias/w.pth", _ok()),  # a link to the allowed directory itself
    ("allowed/escape.pth", _refused(r"escape\.pth' resolve to .*outside/evil\.pth'.*allow-list")),
    ("allowed/escape_dir/evil.pth", _refused("outside the allow-list")),
    ("allowed/../outside/evil.pth", _refused(r"resolve to .*outside/evil\.pth'")),
    ("allowed/sub/../../outside/evil.pth", _refused("outside the allow-list")),
    ("allowed/../allowed-not/w.pth", _refused("outside the allow-list")),  # prefix, not a parent
    ("outside/evil.pth", _refused("outside the allow-list")),
    ("outside/missing.pth", _refused("outside the allow-list")),
    ("/etc/passwd", _refused(r"'/etc/passwd' resolve to '/etc/passwd'")),
]


@pytest.mark.parametrize(("rel", "expectation"), CASES, ids=[c[0] for c in CASES])
def test_local_paths_must_resolve_inside_an_allowed_directory(
    tree: Path, rel: str, expectation: AbstractContextManager[object]
) -> None:
    policy = WeightsPolicy(allowed_dirs=(tree / "allowed",), allowed_hub_orgs=())
    weights = rel if rel.startswith("/") else str(tree / rel)
    with expectation:
        policy.check(weights)


@pytest.mark.parametrize(
    ("rel", "expectation"),
    [("allowed/w.pth", _ok()), ("outside/evil.pth", _refused("outside the allow-list"))],
)
def test_file_urls_are_local_paths(
    tree: Path, rel: str, expectation: AbstractContextManager[object]
) -> None:
    policy = WeightsPolicy(allowed_dirs=(tree / "allowed",))
    with expectation:
        policy.check((tree / rel).as_uri())


def test_relative_paths_resolve_against_the_working_directory(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = WeightsPolicy(allowed_dirs=(tree / "allowed",))
    monkeypatch.chdir(tree / "allowed" / "sub")
    policy.check("v.pt2")
    policy.check("../w.pth")
    with _refused("outside the allow-list"):
        policy.check("../../outside/evil.pth")


def test_an_allowed_directory_given_through_a_link_or_dots(tree: Path) -> None:
    policy = WeightsPolicy(allowed_dirs=(tree / "alias", tree / "outside" / ".." / "nowhere"))
    policy.check(str(tree / "allowed" / "w.pth"))
    with _refused("outside the allow-list"):
        policy.check(str(tree / "outside" / "evil.pth"))


HUB_CASES = [
    ("hub", _ok()),
    ("facebook/sapiens-pose-1b", _ok()),
    ("hf://facebook/sapiens-depth-2b-bfloat16", _ok()),
    ("FaceBook/sapiens-seg-1b", _ok()),
    ("evil/sapiens-pose-1b", _refused(r"organisation 'evil', not on the allow-list")),
    ("hf://evil/sapiens-pose-1b", _refused(r"organisation 'evil'")),
    ("hf://facebook", _refused("no local path or hub repository")),
    ("s3://bucket/sapiens.pth", _refused(r"\(s3://\)")),
    ("https://example.invalid/x.pth", _refused(r"\(https://\)")),
    ("file://host/share/x.pth", _refused("only file:///absolute/path")),
    ("", _refused("empty")),
]


@pytest.mark.parametrize(
    ("weights", "expectation"), HUB_CASES, ids=[c[0] or "empty" for c in HUB_CASES]
)
def test_hub_names_must_belong_to_an_allowed_organisation(
    weights: str, expectation: AbstractContextManager[object], tmp_path: Path
) -> None:
    policy = WeightsPolicy(allowed_dirs=(tmp_path,), allowed_hub_orgs=("facebook",))
    with expectation:
        policy.check(weights)


def test_an_existing_local_directory_named_like_a_hub_repository_is_a_path(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``org/name`` is what load_checkpoint reads as a local path when it exists; so does the
    policy (an allowed organisation does not let a local file through)."""
    monkeypatch.chdir(tree / "outside")
    (tree / "outside" / "facebook").mkdir()
    (tree / "outside" / "facebook" / "sapiens-pose-1b").write_bytes(b"x")
    policy = WeightsPolicy(allowed_dirs=(tree / "allowed",))
    with _refused("outside the allow-list"):
        policy.check("facebook/sapiens-pose-1b")


def test_the_default_allows_the_official_organisation_and_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    policy = WeightsPolicy()
    assert policy.allowed_hub_orgs == ("facebook",)
    assert policy.allowed_dirs == (tmp_path / "hub",)
    policy.check("facebook/sapiens-pose-0.3b-torchscript")
    policy.check(str(tmp_path / "hub" / "models--facebook--sapiens-pose-0.3b" / "x.pt2"))
    with _refused("outside the allow-list"):
        policy.check(str(tmp_path / "elsewhere.pth"))
    with _refused("not on the allow-list"):
        policy.check("someone/sapiens-pose-0.3b")


def test_the_message_is_one_line_naming_the_location_and_the_allow_list(tree: Path) -> None:
    policy = WeightsPolicy(allowed_dirs=(tree / "allowed",), allowed_hub_orgs=("facebook",))
    with pytest.raises(CheckpointError) as e:
        policy.check(str(tree / "outside" / "evil.pth"))
    text = str(e.value)
    assert "\n" not in text
    assert str(tree / "outside" / "evil.pth") in text
    assert str(tree / "allowed") in text and "'facebook'" in text
    assert isinstance(e.value, ValueError)  # CheckpointError is also a ValueError
