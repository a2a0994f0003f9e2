"""The driver's waits: a stage that never answers fails the job within its stall timeout, with
a one-line reason, and a cancel or a lost lease is seen while waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from flows.watch import JobCancelledError, JobStalledError, LeaseLostStop, Watchdog
from tests.conftest import local_ray

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray() -> Iterator[ModuleType]:
    with local_ray(2) as ray:
        yield ray


@pytest.fixture(scope="module")
def hang(ray: ModuleType):
    class Hang:  # defined here so that Ray ships it by value to its worker
        def forever(self) -> None:
            time.sleep(3600)

        def soon(self, s: float) -> str:
            time.sleep(s)
            return "done"

    actor = ray.remote(num_cpus=0, max_concurrency=4)(Hang).remote()
    yield actor
    ray.kill(actor)


def test_a_stage_that_never_answers_fails_the_job_in_time(hang) -> None:
    watch = Watchdog(job_id="j1", stall_s=2.0, should_stop=None)
    t0 = time.monotonic()
    with pytest.raises(JobStalledError) as e:
        watch.get(hang.forever.remote(), "the video to open")
    assert 2.0 <= time.monotonic() - t0 < 6.0
    text = str(e.value)
    assert "\n" not in text and "no progress" in text and "the video to open" in text


def test_progress_restarts_the_stall_clock(hang) -> None:
    watch = Watchdog(job_id="j1", stall_s=2.5, should_stop=None)
    for _ in range(3):  # 4.5 s in all, never 2.5 s without progress
        assert watch.get(hang.soon.remote(1.5), "a batch") == "done"


@pytest.mark.parametrize(
    ("reason", "error"), [("cancelled", JobCancelledError), ("lease lost", LeaseLostStop)]
)
def test_a_stop_is_seen_while_waiting(hang, reason: str, error: type) -> None:
    asked = time.monotonic() + 1.0
    watch = Watchdog(
        job_id="j1", stall_s=None, should_stop=lambda: reason if time.monotonic() > asked else None
    )
    with pytest.raises(error):
        watch.get(hang.forever.remote(), "the next decoded batch")
    assert time.monotonic() - asked < 3.0
