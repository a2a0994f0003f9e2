"""The pool-sizing policy: enough actors to drain the backlog in time, within the bounds."""

from __future__ import annotations

import pytest

from flows.pool import ScalePolicy, desired_actors, move_to


def test_no_work_keeps_the_minimum() -> None:
    policy = ScalePolicy(min_actors=1, max_actors=4)
    assert desired_actors(policy, backlog_frames=0, jobs=0, fps_per_actor=None) == 1
    assert (
        desired_actors(ScalePolicy(max_actors=4), backlog_frames=0, jobs=0, fps_per_actor=None) == 0
    )


def test_the_backlog_and_measured_throughput_set_the_size() -> None:
    policy = ScalePolicy(max_actors=8, target_drain_s=100)
    # 6000 frames at 10 frames/s per actor within 100 s: 6 actors.
    assert desired_actors(policy, backlog_frames=6000, jobs=10, fps_per_actor=10.0) == 6
    # Faster actors: fewer needed.
    assert desired_actors(policy, backlog_frames=6000, jobs=10, fps_per_actor=30.0) == 2
    # Before any measurement the default rate is used.
    assert desired_actors(policy, backlog_frames=6000, jobs=10, fps_per_actor=None) == 8


def test_never_more_actors_than_jobs_or_the_maximum_and_at_least_one_with_work() -> None:
    policy = ScalePolicy(max_actors=8, target_drain_s=1)
    assert desired_actors(policy, backlog_frames=10**6, jobs=3, fps_per_actor=1.0) == 3
    assert desired_actors(policy, backlog_frames=10**6, jobs=50, fps_per_actor=1.0) == 8
    assert desired_actors(policy, backlog_frames=1, jobs=1, fps_per_actor=1000.0) == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"min_actors": 2, "max_actors": 1}, {"max_actors": 0}, {"idle_s": 0}, {"actor_gpus": -1}],
)
def test_bad_policies_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ScalePolicy(**kwargs)


def test_a_job_moves_only_to_a_member_with_two_jobs_fewer() -> None:
    assert move_to([3, 1], 3) == 1  # a new member: the job leaves the crowded one
    assert move_to([3, 2], 3) is None  # one apart: moving would only swap the loads
    assert move_to([2, 2], 2) is None
    assert move_to([4, 0, 1], 4) == 1  # the least loaded
    assert move_to([], 5) is None


def test_gpu_share_fits_members_by_worst_case_memory() -> None:
    """Shares from the weights of every task group (released: one ~0.3B..2B backbone per task,
    4 tasks) plus an activation reserve; references computed from the published sizes."""
    from actors.infer import ModelSpec
    from flows.pool import gpu_share

    gib = 2**30
    # 0.3b bf16: 4 x 0.30e9 params x 2 bytes = 2.25 GiB + 8 GiB reserve -> 7 fit in 80 GiB.
    assert 4 * 0.302e9 * 2 / gib + 8 < 80 / 7
    assert gpu_share(ModelSpec(size="0.3b"), 80.0) == 0.1428
    # 2b bf16: 4 x 2.12e9 x 2 bytes = 15.8 GiB + 8 -> 3 fit in 80 GiB, 5 in 141 GiB.
    assert gpu_share(ModelSpec(size="2b"), 80.0) == 0.3333
    assert gpu_share(ModelSpec(size="2b"), 141.0) == 0.2
    # 2b float32 needs 31.7 + 8 GiB: alone on a 24 GiB device.
    assert gpu_share(ModelSpec(size="2b", dtype="float32"), 24.0) == 1.0
    assert gpu_share(ModelSpec(size="tiny"), 80.0) == 0.125  # at most 8 per device


def test_serve_defaults_follow_the_gpus(monkeypatch) -> None:
    """One Sapiens actor per GPU and 8 jobs per GPU (at least 4 jobs and 1 actor); given values
    win. The GPU count is faked here (these machines have none): torch's own answer is what
    ``serve_defaults`` reads."""
    import torch

    from flows.pool import serve_defaults

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert serve_defaults(None, None) == (4, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert serve_defaults(None, None) == (32, 4)
    assert serve_defaults(2, None) == (2, 4) and serve_defaults(None, 1) == (32, 1)


def test_model_tags_tell_the_pools_apart() -> None:
    from actors.infer import ModelSpec
    from flows.scaling import model_tag

    assert model_tag(ModelSpec(size="0.3b")) == "0.3b"
    assert model_tag(ModelSpec(size="1b", dtype="bfloat16", compile=True)) == "1b:bfloat16:compiled"
    assert model_tag(ModelSpec(size="tiny", seed=3)) == "tiny:seed3"
    assert model_tag(ModelSpec(size="2b", weights="/w", fmt="torchscript")) == "2b:/w:torchscript"
