"""`serve` loads checkpoints only from its allow-list: a job naming another place fails at once,
with one line, before any actor is made (no Ray here: the check comes first)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.service import JobService
from models import WeightsPolicy
from storage import Coordinator

pytestmark = pytest.mark.redis


def _job(coord: Coordinator, weights: str) -> str:
    spec = {"source": "a.mp4", "model": {"size": "0.3b", "weights": weights}}
    return coord.submit(spec).job_id


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    d = tmp_path / "allowed"
    d.mkdir()
    (d / "sapiens_0.3b_goliath_best_goliath_AP_573.pth").write_bytes(b"not used")
    return d


def _service(coord: Coordinator, allowed: Path) -> JobService:
    policy = WeightsPolicy(allowed_dirs=(allowed,), allowed_hub_orgs=("facebook",))
    return JobService(coord, worker_id="sec-weights", weights_policy=policy)


@pytest.mark.parametrize("where", ["outside", "dotdot", "link-inside", "file-url"])
def test_weights_outside_the_allow_list_fail_the_job(
    coord: Coordinator, allowed: Path, tmp_path: Path, where: str
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.pth").write_bytes(b"x")
    weights = {
        "outside": str(outside),
        "dotdot": f"{allowed}/../elsewhere",
        "file-url": f"file://{outside}",
        "link-inside": str(allowed),
    }[where]
    if where == "link-inside":  # a link in an allowed directory to a file elsewhere
        (allowed / "sapiens_0.3b_goliath_best_goliath_AP_573.pth").unlink()
        (allowed / "sapiens_0.3b_goliath_best_goliath_AP_573.pth").symlink_to(
            outside / "secret.pth"
        )
    job_id = _job(coord, weights)
    lease = coord.claim("sec-weights")
    assert lease is not None and lease.job_id == job_id
    _service(coord, allowed)._run_job(lease)
    record = coord.get(job_id)
    assert record.state == "failed"
    reason = record.error["reason"]
    assert "allow-list" in reason and "\n" not in reason


def test_the_default_allow_list_refuses_any_local_directory(
    coord: Coordinator, allowed: Path
) -> None:
    job_id = _job(coord, str(allowed))
    lease = coord.claim("sec-weights")
    JobService(coord, worker_id="sec-weights")._run_job(lease)
    assert coord.get(job_id).state == "failed"


def test_allowed_weights_pass_the_check(coord: Coordinator, allowed: Path) -> None:
    service = _service(coord, allowed)
    service._check_weights(str(allowed))
    service._check_weights("hub")


def test_detector_weights_outside_the_allow_list_fail_the_job(
    coord: Coordinator, allowed: Path, tmp_path: Path
) -> None:
    """The RT-DETR weights file a job names goes through the same allow-list."""
    outside = tmp_path / "elsewhere.pth"
    outside.write_bytes(b"x")
    spec = {
        "source": "a.mp4",
        "detector": "rtdetr",
        "detection": {"weights": str(outside)},
    }
    job_id = coord.submit(spec).job_id
    lease = coord.claim("sec-weights")
    assert lease is not None and lease.job_id == job_id
    _service(coord, allowed)._run_job(lease)
    record = coord.get(job_id)
    assert record.state == "failed"
    assert "allow-list" in record.error["reason"] and str(outside) in record.error["reason"]
