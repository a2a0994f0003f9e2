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


def test_a_sapiens2_model_by_name_reaches_the_plan_with_its_tasks_and_classes() -> None:
    from flows.cli import _parser
    from flows.cmdutil import spec_from_args
    from flows.plan import plan_job

    spec = spec_from_args(_parser().parse_args(["run", "a.mp4", "--model", "sapiens2-0.4b"]))
    assert (spec.model.family, spec.model.size) == ("sapiens2", "0.4b")
    assert spec.tasks == ("pose", "seg", "normal", "pointmap")  # its own heads
    plan = plan_job(spec)
    assert plan.infer.model.family == "sapiens2" and plan.infer.model.name == "sapiens2-0.4b"
    assert plan.job_facts()["labels"]["seg_classes"][2] == "Eyeglass"
    v1 = spec_from_args(_parser().parse_args(["run", "a.mp4", "--model", "0.3b"]))
    assert (v1.model.family, v1.tasks) == ("sapiens", ("pose", "seg", "depth", "normal"))
    flags = ["run", "a.mp4", "--model", "sapiens2-tiny", "--tasks", "depth", "--reduced-decode"]
    one = spec_from_args(_parser().parse_args(flags))
    assert one.tasks == ("depth",) and one.reduced_decode
    assert plan_job(one).infer.model.heads_for(one.tasks) == ("pointmap",)


def test_an_unknown_model_name_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "a.mp4", "--model", "sapiens2-0.3b"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "a.mp4", "--model", "0.3b", "--tasks", "pointmap"], "subset of"),
        (
            ["run", "a.mp4", "--model", "sapiens2-tiny", "--spec-json", '{"placement": "split"}'],
            "fused placement only",
        ),
        (
            ["run", "a.mp4", "--spec-json", '{"model": {"family": "sapiens3"}}'],
            "model.family must be one of",
        ),
    ],
)
def test_sapiens2_model_mistakes_are_bad_input(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_models_list_shows_both_families_and_their_licences(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    assert main(["models", "list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_repo = {r["repos"][0]: r for r in rows}
    assert by_repo["facebook/sapiens-pose-0.3b"]["licence"] == "CC-BY-NC-4.0"
    s2 = by_repo["facebook/sapiens2-pointmap-0.4b"]
    assert (s2["family"], s2["model"], s2["licence"]) == (
        "sapiens2", "sapiens2-0.4b", "Sapiens2 License"
    )  # fmt: skip
    assert "surveillance" in s2["licence_summary"]
    assert "facebook/sapiens2-pretrain-1b-4k" in by_repo
    assert len([r for r in rows if r["family"] == "sapiens2"]) == 22


def test_live_flags_reach_the_job_spec(capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import _parser
    from flows.cmdutil import spec_from_args

    argv = ["submit", "rtsp://cam/1", "--reconnects", "12", "--reconnect-backoff", "0.5"]
    live = spec_from_args(_parser().parse_args(argv)).live
    assert (live.reconnects, live.backoff_s) == (12, 0.5)
    assert main(["run", "rtsp://cam/1", "--reconnects", "-2"]) == 2
    assert "live.reconnects must be an int in [0, 10000], got -2" in capsys.readouterr().err


def test_priority_is_refused_where_there_is_no_queue(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit", "a.mp4", "--address", "http://127.0.0.1:9", "--priority", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--priority 3: priority orders the queue a `serve` takes jobs from" in err
    assert err.count("\n") == 1
