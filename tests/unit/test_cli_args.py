"""CLI argument handling that needs no cluster: defaults from the environment, bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main


def test_a_remote_output_root_needs_a_configured_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SAPIENS_STREAM_REDIS_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["list", "--output-root", "s3://bucket/prefix"]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # no local directory named after the URL


def test_bad_scaling_settings_are_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--min-actors", "3", "--max-actors", "2"]) == 2
    assert "min_actors" in capsys.readouterr().err
