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


def test_detector_flags_reach_the_job_spec() -> None:
    from flows.cli import _parser
    from flows.cmdutil import spec_from_args
    from flows.errors import SpecError
    from flows.plan import plan_job
    from flows.spec import JobSpec

    args = _parser().parse_args(
        ["run", "a.mp4", "--detector", "rtdetr", "--detector-model", "rtdetr_r34vd",
         "--detector-weights", "/w/r34.pth", "--detector-input-size", "512",
         "--detector-device", "cpu",
         "--score-thr", "0.45", "--nms-iou", "0.55"]
    )  # fmt: skip
    spec = spec_from_args(args)
    assert spec.detector == "rtdetr"
    d = spec.detection
    assert (d.model, d.weights, d.input_size, d.score_thr, d.nms_iou, d.device) == (
        "rtdetr_r34vd", "/w/r34.pth", 512, 0.45, 0.55, "cpu"
    )  # fmt: skip
    assert plan_job(spec).detector_options["device"] == "cpu"
    default = spec_from_args(_parser().parse_args(["run", "a.mp4", "--detector", "rtdetr"]))
    assert plan_job(default).detector_options["device"] == "auto"
    with pytest.raises(SpecError, match=r"detection\.device must be one of"):
        JobSpec.from_dict({"source": "a.mp4", "detection": {"device": "tpu"}})


def test_a_bad_detector_setting_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a.mp4", "--detector", "rtdetr", "--detector-input-size", "100"]) == 2
    assert "input_size" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "mode"),
    [
        ([], "off"),
        (["--compile"], "default"),
        (["--compile", "reduce-overhead"], "reduce-overhead"),
    ],
)
def test_compile_flag_reaches_the_model_runtime(flags: list[str], mode: str) -> None:
    from actors.groups import runtime_spec
    from flows.cli import _parser
    from flows.cmdutil import spec_from_args
    from flows.plan import plan_job

    spec = spec_from_args(_parser().parse_args(["run", "a.mp4", *flags]))
    assert spec.model.compile == mode
    assert runtime_spec(plan_job(spec).infer.model, 4).compile == mode
    assert not runtime_spec(plan_job(spec).infer.model, 4).channels_last


def test_channels_last_flag_reaches_the_model_runtime() -> None:
    from actors.groups import runtime_spec
    from flows.cli import _parser
    from flows.cmdutil import spec_from_args
    from flows.plan import plan_job

    spec = spec_from_args(_parser().parse_args(["run", "a.mp4", "--channels-last"]))
    assert runtime_spec(plan_job(spec).infer.model, 4).channels_last


def test_an_unknown_compile_mode_is_bad_input() -> None:
    from flows.errors import SpecError
    from flows.spec import JobSpec

    with pytest.raises(SpecError, match=r"model\.compile must be"):
        JobSpec.from_dict({"source": "a.mp4", "model": {"compile": "fastest"}})
    assert JobSpec.from_dict({"source": "a.mp4", "model": {"compile": True}}).model.compile == (
        "default"
    )
