"""bench/models.py's ``trunk`` rows: released vs a models.trunk trunk at k vs fully shared, FLOPs
counted on the meta device and crops/s timed in interleaved rounds, as ratios to released."""

from __future__ import annotations

import itertools

import pytest

import bench.models
from bench.models import count_layout_flops, count_trunk_flops, depth_of, heads_of, main

TASKS = ("pose", "seg", "depth", "normal")


# Sapiens2's pointmap scale branch needs a grid that its convolutions leave more than 1x1
@pytest.mark.parametrize(("size", "hw"), [("tiny", (32, 32)), ("sapiens2-tiny", (256, 192))])
def test_trunk_flops_lie_between_released_and_shared(size: str, hw: tuple[int, int]) -> None:
    tasks = heads_of(size, TASKS)
    depth = depth_of(size)
    released = count_layout_flops(tasks, size, hw, "released")
    shared = count_layout_flops(tasks, size, hw, "shared")
    trunk = [count_trunk_flops(tasks, size, hw, k) for k in range(depth + 1)]
    assert trunk[0] == released  # k = 0 shares nothing
    assert all(a > b for a, b in itertools.pairwise(trunk))  # each block saves
    if size.startswith("sapiens2"):
        assert trunk[-1] == shared  # one stem for every task: k = L is one backbone
    else:
        assert trunk[-1] > shared  # pose/normal pad the patch conv by 2: two prefixes at k = L
        # every Sapiens block costs the same: the saving is linear in k past the stem
        steps = {trunk[k] - trunk[k + 1] for k in range(1, depth)}
        assert len(steps) == 1, steps


def test_trunk_section_in_the_default_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the per-task rows (not under test here, and the slow part) are stubbed
    monkeypatch.setattr(bench.models, "bench_one", lambda size, tasks, *a, **kw: {"size": size})
    argv = ["--device", "cpu", "--sizes", "tiny", "--height", "32", "--width", "32"]
    argv += ["--batch", "1", "--iters", "4", "--warmup", "0", "--no-catalogue"]
    result = main(argv)
    capsys.readouterr()
    assert len(result["results"]) == 7  # the per-task rows are still there
    section = result["trunk"]
    assert "FlopCounterMode" in section["method"]["flops"]
    assert "meta device" in section["method"]["flops"]
    (row,) = section["rows"]
    assert row["size"] == "tiny" and row["depth"] == 2 and row["k"] == 1  # k = L/2
    assert row["rounds"] == 4
    layouts = row["layouts"]
    assert list(layouts) == ["released", "trunk", "shared"]
    assert layouts["released"]["groups"] == 4
    assert layouts["trunk"]["groups"] == layouts["shared"]["groups"] == 1
    assert layouts["released"]["flops_vs_released"] == 1.0
    assert layouts["released"]["crops_per_s_vs_released"] == 1.0
    assert 0 < layouts["shared"]["flops_vs_released"] < layouts["trunk"]["flops_vs_released"] < 1
    hw = (32, 32)  # the size main() ran
    exact = count_trunk_flops(TASKS, "tiny", hw, 1) / count_layout_flops(
        TASKS, "tiny", hw, "released"
    )
    assert layouts["trunk"]["flops_vs_released"] == pytest.approx(exact)
    for name, lay in layouts.items():
        assert lay["crops_per_s"] > 0 and lay["ms_per_batch"] > 0, name
        assert len(lay["crops_per_s_vs_released_per_round"]) == 4, name
        # the ratio is the released time over this layout's, the same rounds
        released_s = layouts["released"]["ms_per_batch"]
        assert lay["crops_per_s_vs_released"] == pytest.approx(released_s / lay["ms_per_batch"])


def test_trunk_k_option() -> None:
    argv = ["--device", "cpu", "--sizes", "tiny", "--height", "32", "--width", "32"]
    argv += ["--batch", "1", "--iters", "1", "--warmup", "0", "--no-catalogue", "--only-trunk"]
    result = main([*argv, "--trunk-k", "2"])
    (row,) = result["trunk"]["rows"]
    assert row["k"] == 2 and result["results"] == []
    with pytest.raises(ValueError, match="--trunk-k"):
        main([*argv, "--trunk-k", "3"])
    assert main([*argv, "--no-trunk"])["trunk"] is None
