"""Job options of issue #14 at spec and plan time: priority, flip test, keypoint sets, given
boxes with scores; one-line errors, and the CLI flags that set them."""

from __future__ import annotations

from contextlib import nullcontext as does_not_raise
from pathlib import Path
from typing import Any

import pytest

from actors.groups import ModelSpec, _checkpoint_source
from flows.cli import _parser
from flows.cmdutil import spec_from_args
from flows.errors import SpecError
from flows.plan import plan_job
from flows.spec import JobSpec
from models.errors import CheckpointNotFoundError
from models.hub import released_pose_files


def _spec(**raw: Any) -> JobSpec:
    return JobSpec.from_dict({"source": "a.mp4", **raw})


@pytest.mark.parametrize(
    ("raw", "expectation"),
    [
        ({"priority": -5}, does_not_raise()),
        ({"priority": 2**31 - 1}, does_not_raise()),
        ({"priority": 2**31}, pytest.raises(SpecError, match=r"priority: expected an int in \[")),
        ({"priority": True}, pytest.raises(SpecError, match="got True")),
        ({"priority": 1.5}, pytest.raises(SpecError, match=r"got 1\.5")),
        ({"model": {"flip_test": True}}, does_not_raise()),
        ({"model": {"flip_test": "yes"}}, pytest.raises(SpecError, match="true or false")),
        (
            {"model": {"flip_test": True}, "placement": "split"},
            pytest.raises(SpecError, match="flip_test needs the pose head beside its backbone"),
        ),
        ({"model": {"num_keypoints": 17}}, does_not_raise()),  # tiny: any set
        ({"model": {"size": "0.3b", "num_keypoints": 133, "weights": "/w"}}, does_not_raise()),
        (
            {"model": {"size": "0.3b", "num_keypoints": 133}},
            pytest.raises(
                SpecError,
                match=r"hold 308-keypoint pose files only; put "
                r"sapiens_0\.3b_coco_wholebody_best_coco_wholebody_AP_620\.pth in a directory",
            ),
        ),
        (
            {"model": {"size": "2b", "num_keypoints": 17}},
            pytest.raises(SpecError, match=r"put sapiens_2b_coco_best_coco_AP_822\.pth"),
        ),
        (
            {"model": {"family": "sapiens2", "size": "0.4b", "num_keypoints": 133}},
            pytest.raises(SpecError, match="released Sapiens2 pose models predict 308"),
        ),
        (
            {"model": {"num_keypoints": 70}},
            pytest.raises(SpecError, match="expected 308, 133 or 17 keypoints, got 70"),
        ),
    ],
)
def test_spec_validation(raw: dict[str, Any], expectation: Any) -> None:
    with expectation as refused:
        _spec(**raw)
    if refused is not None:
        assert "\n" not in str(refused.value)


def test_the_plan_carries_flip_test_and_the_keypoint_set() -> None:
    spec = _spec(model={"size": "0.6b", "num_keypoints": 17, "weights": "/w", "flip_test": True})
    plan = plan_job(spec)
    assert (plan.infer.model.flip_test, plan.infer.model.num_keypoints) == (True, 17)
    assert plan.job_facts()["labels"]["keypoints"][0] == "nose"
    assert len(plan.job_facts()["labels"]["keypoints"]) == 17
    with pytest.raises(ValueError, match="hold 308-keypoint pose files only"):
        ModelSpec(size="1b", num_keypoints=133)  # the actors' key refuses it too


def test_released_133_and_17_keypoint_files_are_found_in_a_weights_directory(
    tmp_path: Path,
) -> None:
    assert released_pose_files("1b", 133) == (
        "sapiens_1b_coco_wholebody_best_coco_wholebody_AP_727.pth",
    )
    assert released_pose_files("0.6b", 17, "torchscript") == (
        "sapiens_0.6b_coco_best_coco_AP_812_torchscript.pt2",
    )
    assert released_pose_files("0.3b", 308)[0] == "sapiens_0.3b_goliath_best_goliath_AP_573.pth"
    with pytest.raises(CheckpointNotFoundError, match="task 'pose' at size '2b'"):
        released_pose_files("2b", 308)
    key = ModelSpec(size="0.6b", num_keypoints=17, weights=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"sapiens_0\.6b_coco_best_coco_AP_812\.pth"):
        _checkpoint_source(key, "pose")
    (tmp_path / "sapiens_0.6b_coco_best_coco_AP_812.pth").write_bytes(b"")
    assert _checkpoint_source(key, "pose") == str(
        tmp_path / "sapiens_0.6b_coco_best_coco_AP_812.pth"
    )


def test_cli_flags_reach_the_spec() -> None:
    argv = ["submit", "a.mp4", "--model", "0.3b", "--weights", "/w", "--keypoints", "133"]
    spec = spec_from_args(_parser().parse_args([*argv, "--flip-test", "--priority", "3"]))
    assert (spec.priority, spec.model.flip_test, spec.model.num_keypoints) == (3, True, 133)
    plain = spec_from_args(_parser().parse_args(["run", "a.mp4"]))
    assert (plain.priority, plain.model.flip_test, plain.model.num_keypoints) == (0, False, 308)
