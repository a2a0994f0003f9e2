"""DynamicBatcher: concurrent callers share fixed-size forwards and get exactly their outputs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from models.batching import BatcherClosedError, DynamicBatcher


class Recorder:
    """A per-sample forward that remembers the batches it saw."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.wants: list[frozenset[str] | None] = []
        self.rows: list[torch.Tensor] = []
        self.delay_s = delay_s
        self.weight = torch.randn(4, 3)

    def __call__(
        self, x: torch.Tensor, want: frozenset[str] | None = None
    ) -> dict[str, torch.Tensor]:
        self.sizes.append(x.shape[0])
        self.wants.append(want)
        self.rows.append(x[:, 0, 0, 0].clone())
        time.sleep(self.delay_s)
        flat = x.mean(dim=(2, 3))
        out = {"a": flat @ self.weight.T, "b": x * 2}
        return out if want is None else {k: v for k, v in out.items() if k in want}


def test_every_caller_gets_exactly_its_own_outputs() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, batch_size=5, deadline_s=0.02)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(n, 3, 2, 2, generator=gen) for n in (1, 3, 7, 2, 11, 4, 5, 1)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda ix: batcher(ix[1], key=f"job{ix[0] % 3}"), enumerate(inputs)))
    assert max(fwd.sizes) <= 5
    for x, out in zip(inputs, got, strict=True):
        ref = fwd(x)
        assert torch.allclose(out["a"], ref["a"], atol=1e-6)
        assert torch.equal(out["b"], ref["b"])
    stats = batcher.stats()
    assert stats.crops == sum(len(x) for x in inputs)
    assert stats.requests == len(inputs)
    assert stats.slots == 5 * stats.forwards and stats.fill <= 1.0
    batcher.close()


def test_a_lone_caller_is_not_held_back_by_the_deadline() -> None:
    batcher = DynamicBatcher(Recorder(), batch_size=64, deadline_s=5.0)
    t0 = time.perf_counter()
    batcher(torch.zeros(2, 3, 2, 2))
    assert time.perf_counter() - t0 < 1.0  # nobody else is preparing: no reason to wait
    batcher.close()


def test_an_open_session_makes_a_small_request_wait_at_most_the_deadline() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, batch_size=8, deadline_s=0.3)
    release = threading.Event()

    def slow_preparer() -> None:
        with batcher.session("other"):
            release.wait(5)

    other = threading.Thread(target=slow_preparer)
    other.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    batcher(torch.zeros(1, 3, 2, 2), key="me")
    waited = time.perf_counter() - t0
    release.set()
    other.join()
    assert 0.25 <= waited < 2.0
    assert fwd.sizes == [1]
    batcher.close()


def test_a_session_that_submits_joins_the_waiting_forward() -> None:
    fwd = Recorder(delay_s=0.0)
    batcher = DynamicBatcher(fwd, batch_size=8, deadline_s=5.0)
    entered = threading.Event()
    results: dict[str, torch.Tensor] = {}

    def job_b() -> None:
        with batcher.session("b") as submit:
            entered.set()
            time.sleep(0.2)  # preparing crops
            results["b"] = submit(torch.full((3, 3, 2, 2), 2.0))["b"]

    thread = threading.Thread(target=job_b)
    thread.start()
    entered.wait(5)
    t0 = time.perf_counter()
    results["a"] = batcher(torch.full((2, 3, 2, 2), 1.0), key="a")["b"]
    thread.join()
    assert time.perf_counter() - t0 < 2.0  # released when b submitted, not at the deadline
    assert fwd.sizes == [5]  # one forward holding both jobs' crops
    assert batcher.stats().mixed_forwards == 1
    assert torch.equal(results["a"], torch.full((2, 3, 2, 2), 2.0))
    assert torch.equal(results["b"], torch.full((3, 3, 2, 2), 4.0))
    batcher.close()


def test_a_session_left_without_submitting_releases_the_waiters() -> None:
    batcher = DynamicBatcher(Recorder(), batch_size=8, deadline_s=5.0)
    entered, leave = threading.Event(), threading.Event()

    def no_persons() -> None:
        with batcher.session("empty"):
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=no_persons)
    thread.start()
    entered.wait(5)
    threading.Timer(0.1, leave.set).start()
    t0 = time.perf_counter()
    batcher(torch.zeros(1, 3, 2, 2))
    thread.join()
    assert time.perf_counter() - t0 < 2.0
    batcher.close()


def test_a_small_job_is_not_starved_by_a_big_one() -> None:
    fwd = Recorder(delay_s=0.05)
    batcher = DynamicBatcher(fwd, batch_size=4, deadline_s=0.0)
    big = torch.zeros(40, 3, 2, 2)  # ten forwards' worth, marked 0
    small = torch.ones(1, 3, 2, 2)  # marked 1
    with ThreadPoolExecutor(2) as pool:
        f_big = pool.submit(batcher, big, key="big")
        time.sleep(0.02)
        f_small = pool.submit(batcher, small, key="small")
        f_big.result(), f_small.result()
    first_with_small = next(i for i, rows in enumerate(fwd.rows) if (rows == 1).any())
    assert first_with_small <= 2  # served in the next forward, not after the 40 crops
    assert sum(fwd.sizes) == 41
    batcher.close()


def test_a_failing_forward_fails_its_callers_only() -> None:
    calls = {"n": 0}

    def flaky(x: torch.Tensor, want: frozenset[str] | None) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device error")
        return {"y": x + 1}

    batcher = DynamicBatcher(flaky, batch_size=4, deadline_s=0.0)
    with pytest.raises(RuntimeError, match="device error"):
        batcher(torch.zeros(6, 1, 1, 1))  # its second chunk must not run for nobody
    assert torch.equal(batcher(torch.zeros(2, 1, 1, 1))["y"], torch.ones(2, 1, 1, 1))
    assert calls["n"] == 2
    batcher.close()


def test_closing_fails_later_requests_clearly() -> None:
    batcher = DynamicBatcher(Recorder(), batch_size=2)
    batcher.close()
    with pytest.raises(BatcherClosedError):
        batcher(torch.zeros(1, 3, 2, 2))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        DynamicBatcher(Recorder(), batch_size=0)
    with pytest.raises(ValueError, match="deadline_s"):
        DynamicBatcher(Recorder(), batch_size=1, deadline_s=-1)


def test_a_forward_computes_what_its_requests_want_and_each_gets_only_its_own() -> None:
    """Jobs asking for different outputs (tasks) share one forward; it computes the union and
    each caller gets back exactly the outputs it named; a caller naming none gets all."""
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, batch_size=8, deadline_s=5.0)
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 3, 2, 2, generator=gen) for _ in range(3)]
    wants: list[frozenset[str] | None] = [frozenset({"a"}), frozenset({"b"}), None]
    start = threading.Barrier(3)

    def call(k: int) -> dict[str, torch.Tensor]:
        with batcher.session(f"job{k}", wants[k]) as submit:
            start.wait()
            return submit(inputs[k])

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(call, range(3)))
    batcher.close()
    assert fwd.sizes == [6]  # one shared forward
    assert fwd.wants == [None]  # a request wanting everything makes the union everything
    assert set(got[0]) == {"a"} and set(got[1]) == {"b"} and set(got[2]) == {"a", "b"}
    for x, out in zip(inputs, got, strict=True):
        ref = fwd(x)
        for name, value in out.items():
            assert torch.allclose(value, ref[name], atol=1e-6)


def test_the_union_of_wants_is_what_the_forward_is_asked_for() -> None:
    fwd = Recorder()
    batcher = DynamicBatcher(fwd, batch_size=8, deadline_s=5.0)
    start = threading.Barrier(2)

    def call(k: int) -> dict[str, torch.Tensor]:
        with batcher.session(f"job{k}", frozenset({"a"} if k == 0 else {"a", "c"})) as submit:
            start.wait()
            return submit(torch.zeros(1, 3, 2, 2))

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(call, range(2)))
    batcher.close()
    assert fwd.wants == [frozenset({"a", "c"})]
    assert [set(g) for g in got] == [{"a"}, {"a"}]  # "c" is no output of this forward
