"""`sapiens-stream query` and flows.exports.query on synthetic stores (no pipeline, no Redis)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from flows.exports import ExportError, nearest_frame, query_frame, query_track, resolve_store
from models.metadata import keypoint_set, seg_classes
from storage import FrameResult, ResultReader, StoreNotFoundError, StoreSpec, Writer, open_result
from storage.synthetic import synthetic_frame

EMPTY_FRAME = 3  # every store below has no person in this frame


def _store(path: Path, *, k: int = 17, patch: bool = False, **spec_kw: object) -> ResultReader:
    spec = StoreSpec.for_source(
        48,
        64,
        num_keypoints=k,
        frames_per_shard=2,
        patch_size=(16, 12) if patch else None,
        **spec_kw,
    )
    w = Writer.create(str(path), spec, job={"job_id": path.stem})
    for i in range(5):
        w.add(synthetic_frame(spec, i, n_persons=0 if i == EMPTY_FRAME else 2))
    w.finalize()
    return open_result(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ResultReader]:
    root = tmp_path_factory.mktemp("query")
    return {
        "maps": _store(root / "maps.zarr"),  # every task, frame maps, K = 17
        "patches": _store(root / "patches.zarr", k=308, patch=True),  # per person, K = 308
        "noseg": _store(root / "noseg.zarr", tasks=("pose", "depth")),
    }


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_query_frame_gives_named_keypoints_boxes_track_ids_and_scores(
    stores: dict[str, ResultReader],
) -> None:
    for name, k in (("maps", 17), ("patches", 308)):
        r = stores[name]
        out = query_frame(r, 1)
        p = r.persons(1)
        assert out["frame"] == 1 and out["status"] == "ok"
        assert out["time_s"] == pytest.approx(float(r.read_frames(1, 2).time_s[0]))
        assert out["keypoint_names"] == list(keypoint_set(k).names)
        assert out["track_id"] == p.track_id.tolist()
        np.testing.assert_array_equal(np.array(out["box_xyxy"], np.float32), p.box_xyxy)
        np.testing.assert_array_equal(np.array(out["score"], np.float32), p.score)
        kp = np.array(out["keypoints"], np.float32)
        assert kp.shape == (2, k, 3)
        np.testing.assert_array_equal(kp[..., :2], p.keypoints_xy)
        np.testing.assert_array_equal(kp[..., 2], p.keypoint_score)
    one = query_frame(stores["maps"], 1, track=101)
    assert one["track_id"] == [101] and len(one["keypoints"]) == 1


def test_query_uses_the_keypoint_names_the_job_recorded(tmp_path: Path) -> None:
    spec = StoreSpec.for_source(24, 32, num_keypoints=17, tasks=("pose",))
    names = [n.upper() for n in keypoint_set(17).names]
    for name, labels in (
        ("none", {}),
        ("named", {"keypoints": names}),
        ("bad", {"keypoints": names[:3]}),
    ):
        w = Writer.create(
            str(tmp_path / f"{name}.zarr"), spec, job={"job_id": name, "labels": labels}
        )
        w.add(synthetic_frame(spec, 0, n_persons=1))
        w.finalize()
    assert query_frame(open_result(tmp_path / "none.zarr"), 0)["keypoint_names"][0] == "nose"
    assert query_frame(open_result(tmp_path / "named.zarr"), 0)["keypoint_names"] == names
    with pytest.raises(ExportError, match="expected 17 names, got 3"):
        query_frame(open_result(tmp_path / "bad.zarr"), 0)


def test_time_picks_the_nearest_frame_with_a_known_time(tmp_path: Path) -> None:
    spec = StoreSpec.for_source(24, 32, num_keypoints=17, tasks=("pose",))
    w = Writer.create(str(tmp_path / "t.zarr"), spec, job={"job_id": "t"})
    empty = {
        "track_id": np.zeros(0, np.int64),
        "box_xyxy": np.zeros((0, 4), np.float32),
        "score": np.zeros(0, np.float32),
        "keypoints_xy": np.zeros((0, 17, 2), np.float32),
        "keypoint_score": np.zeros((0, 17), np.float32),
    }
    times = [0.0, 0.5, float("nan"), 1.5]  # frame 2 is corrupt: its time is unknown
    for i, t in enumerate(times):
        w.add(
            FrameResult(
                index=i,
                source_index=i,
                pts=None,
                time_s=t,
                status="corrupt" if i == 2 else "ok",
                **empty,
            )
        )
    w.finalize()
    r = open_result(tmp_path / "t.zarr")
    assert [nearest_frame(r, t) for t in (-3, 0.2, 0.25, 0.9, 1.0, 1.2, 99)] == [
        0,
        0,
        0,
        1,
        1,
        3,
        3,
    ]


def test_query_track_lists_each_frame_of_the_track(stores: dict[str, ResultReader]) -> None:
    r = stores["maps"]
    out = query_track(r, 100)
    assert out["track_id"] == 100 and out["frame"] == [0, 1, 2, 4]  # not the empty frame
    assert out["time_s"] == pytest.approx(r.read_frames().time_s[[0, 1, 2, 4]].tolist())
    t = r.track(100).persons
    np.testing.assert_array_equal(np.array(out["keypoints"], np.float32)[..., :2], t.keypoints_xy)
    np.testing.assert_array_equal(np.array(out["score"], np.float32), t.score)


@pytest.mark.parametrize("name", ["maps", "patches"])
def test_dense_values_are_taken_over_the_pixels_each_person_owns(
    stores: dict[str, ResultReader], name: str
) -> None:
    r = stores[name]
    out = query_frame(r, 2, tasks=("seg", "depth", "normal", "pointmap"))
    assert "keypoints" not in out
    f = r.frame(2)
    classes = seg_classes("sapiens").names
    for k in range(2):
        own = f.person_map == k + 1
        assert own.any()
        assert out["area_px"][k] == int(own.sum())
        labels, counts = np.unique(f.part[own], return_counts=True)
        assert out["parts"][k] == {classes[c]: int(n) for c, n in zip(labels, counts, strict=True)}
        depth = f.depth[own]
        assert out["depth_median"][k] == pytest.approx(np.median(depth[np.isfinite(depth)]))
        mean = f.normal[own].mean(axis=0)
        assert out["normal_mean"][k] == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)
        xyz = f.pointmap[own]
        want = [np.median(xyz[np.isfinite(xyz[:, a]), a]) for a in range(3)]
        assert out["xyz_median"][k] == pytest.approx(want, rel=1e-6)


def test_csv_has_one_line_per_person_and_keypoint(
    stores: dict[str, ResultReader], capsys: pytest.CaptureFixture[str]
) -> None:
    r = stores["maps"]
    rc, out, _ = _cli(
        capsys, "query", r.uri, "--frame", "1", "--format", "csv", "--task", "pose,depth"
    )
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    p = r.persons(1)
    assert len(rows) == 2 * 17
    assert rows[0].keys() >= {"track_id", "x0", "y1", "depth_median", "keypoint", "x", "y"}
    row = rows[17 + 9]  # person 1, left_wrist
    assert (row["frame"], row["track_id"], row["keypoint"]) == ("1", "101", "left_wrist")
    assert float(row["x"]) == pytest.approx(float(p.keypoints_xy[1, 9, 0]))
    assert float(row["keypoint_score"]) == pytest.approx(float(p.keypoint_score[1, 9]))
    assert float(row["x1"]) == pytest.approx(float(p.box_xyxy[1, 2]))
    rc, out, _ = _cli(capsys, "query", r.uri, "--track", "101", "--format", "csv", "--task", "seg")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["frame"] for row in rows] == ["0", "1", "2", "4"] and "keypoint" not in rows[0]
    assert sum(int(v) for k, v in rows[0].items() if k.startswith("part_")) == int(
        rows[0]["area_px"]
    )


def test_query_json_from_the_cli_and_the_summary(
    stores: dict[str, ResultReader], capsys: pytest.CaptureFixture[str]
) -> None:
    r = stores["maps"]
    rc, out, _ = _cli(capsys, "query", r.uri, "--time", "0.05")
    assert rc == 0 and json.loads(out) == query_frame(r, 1)
    rc, out, _ = _cli(capsys, "query", r.uri)
    assert rc == 0 and json.loads(out)["frames"] == 5


def test_a_job_id_is_found_under_the_output_root(
    stores: dict[str, ResultReader], capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(Path(stores["maps"].uri).parent)
    assert resolve_store("maps", output_root=root) == f"{root}/maps.zarr"
    rc, out, _ = _cli(capsys, "query", "maps", "--frame", "0", "--output-root", root)
    assert rc == 0 and json.loads(out)["store"] == f"{root}/maps.zarr"
    with pytest.raises(StoreNotFoundError, match="no job or store 'nope'"):
        resolve_store("nope", output_root=root)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["no/such.zarr"], "no store at 'no/such.zarr'"),
        (["no-such-job"], "no job or store 'no-such-job'"),
        (["{maps}", "--frame", "5"], r"frames \[5, 6\) requested, 5 committed"),
        (["{maps}", "--frame", "-1"], "requested"),
        (["{maps}", "--frame", "5", "--format", "csv"], "requested, 5 committed"),
        (["{maps}", "--track", "7"], "track 7 does not occur.*tracks: 100, 101"),
        (["{maps}", "--track", "7", "--format", "csv"], "track 7 does not occur"),
        (["{maps}", "--format", "csv"], "need --frame, --time or --track"),
        (["{maps}", "--frame", "0", "--task", "hands"], "unknown task"),
        (["{noseg}", "--frame", "0", "--task", "seg"], r"\['seg'\] not in this store"),
        (["{noseg}", "--frame", "0", "--task", "depth"], "need the seg task"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    stores: dict[str, ResultReader],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: list[str],
    match: str,
) -> None:
    argv = [a.format(**{k: v.uri for k, v in stores.items()}) for a in argv]
    rc, out, err = _cli(capsys, "query", *argv, "--output-root", str(tmp_path))
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(match, err), err
