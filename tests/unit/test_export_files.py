"""`sapiens-stream export` to COCO results, PNG label maps and npz, on synthetic stores."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from flows.cli import main
from flows.exports import ExportError, export_coco, export_npz, export_png
from flows.exports.coco import WHOLEBODY_PARTS
from models.metadata import GOLIATH_308, keypoint_set, seg_classes
from storage import ResultReader, StoreSpec, Writer, open_result
from storage.synthetic import synthetic_frame


def _store(
    path: Path, *, k: int = 17, patch: bool = False, job: dict | None = None, **spec_kw: object
) -> ResultReader:
    spec = StoreSpec.for_source(
        48,
        64,
        num_keypoints=k,
        frames_per_shard=2,
        patch_size=(16, 12) if patch else None,
        **spec_kw,
    )
    w = Writer.create(str(path), spec, job={"job_id": path.stem, **(job or {})})
    for i in range(5):
        w.add(synthetic_frame(spec, i, n_persons=0 if i == 3 else 1 + i % 3))
    w.finalize()
    return open_result(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ResultReader]:
    root = tmp_path_factory.mktemp("export")
    names, palette = [f"c{i}" for i in range(29)], [[255, 128, i] for i in range(29)]
    orange = {"seg_classes": names, "seg_palette": palette}
    return {
        "k17": _store(root / "k17.zarr", tasks=("pose", "seg")),
        "k133": _store(
            root / "k133.zarr",
            k=133,
            patch=True,
            num_classes=29,
            tasks=("pose", "seg", "normal", "pointmap"),
            job={"labels": orange},
        ),
        "k308": _store(root / "k308.zarr", k=308, patch=True),
        "maps": _store(root / "maps.zarr", tasks=("seg", "depth", "normal", "pointmap")),
    }


def _load(results: Path, images: Path) -> tuple[COCO, COCO]:
    gt = COCO(str(images))
    return gt, gt.loadRes(str(results))


def _triples(ann: dict, field: str) -> np.ndarray:
    return np.array(ann[field], np.float64).reshape(-1, 3)


@pytest.mark.parametrize("name", ["k17", "k133", "k308"])
def test_coco_results_load_with_pycocotools(
    stores: dict[str, ResultReader], tmp_path: Path, name: str
) -> None:
    r = stores[name]
    k = r.spec.num_keypoints
    summary = export_coco(r, tmp_path / "res.json", images_json=tmp_path / "img.json")
    gt, dt = _load(tmp_path / "res.json", tmp_path / "img.json")
    table = r.read_frames()
    assert (summary.frames, summary.persons) == (5, int(table.person_count.sum()))
    assert sorted(gt.getImgIds()) == [0, 1, 2, 3, 4]
    assert gt.imgs[2]["width"] == 64 and gt.imgs[2]["height"] == 48
    cat = gt.loadCats(1)[0]
    assert cat["keypoints"] == list(keypoint_set(17 if k == 133 else k).names)
    anns = [dt.anns[i] for i in sorted(dt.anns)]
    assert [a["image_id"] for a in anns] == [0, 1, 1, 2, 2, 2, 4, 4]
    people = r.persons(0, 5)
    for a, xy, s, box, score in zip(
        anns, people.keypoints_xy, people.keypoint_score, people.box_xyxy, people.score, strict=True
    ):
        fields = [f for f, _, _ in WHOLEBODY_PARTS] if k == 133 else ["keypoints"]
        got = np.concatenate([_triples(a, f) for f in fields])
        assert got.shape == (k, 3)
        np.testing.assert_allclose(got[:, :2], xy, rtol=1e-6)
        np.testing.assert_allclose(got[:, 2], s, rtol=1e-6)
        np.testing.assert_allclose(a["bbox"], [*box[:2], *(box[2:] - box[:2])], rtol=1e-6)
        valid = s[s > 0.2]
        assert a["score"] == pytest.approx(float(score) * float(valid.mean()), rel=1e-6)
    if k == 133:
        assert [len(anns[0][f]) for f, _, _ in WHOLEBODY_PARTS] == [51, 18, 204, 63, 63]


@pytest.mark.parametrize("name", ["k133", "k308"])
def test_coco_17_takes_the_coco_keypoints_by_name(
    stores: dict[str, ResultReader], tmp_path: Path, name: str
) -> None:
    r = stores[name]
    export_coco(r, tmp_path / "res.json", images_json=tmp_path / "img.json", coco17=True)
    _, dt = _load(tmp_path / "res.json", tmp_path / "img.json")
    ann = dt.anns[1]
    assert set(ann) >= {"keypoints", "score", "bbox"} and "foot_kpts" not in ann
    got = _triples(ann, "keypoints")
    names = GOLIATH_308.names if name == "k308" else keypoint_set(133).names
    xy = r.persons(0).keypoints_xy[0]
    for j, n in enumerate(keypoint_set(17).names):
        np.testing.assert_allclose(got[j, :2], xy[names.index(n)], rtol=1e-6)
    if name == "k308":  # the Goliath set has no wrists among its first 17: they come from 62, 41
        np.testing.assert_allclose(got[9, :2], xy[62], rtol=1e-6)


def test_coco_writes_unknown_keypoints_as_zero_and_needs_pose(
    stores: dict[str, ResultReader], tmp_path: Path
) -> None:
    spec = StoreSpec.for_source(24, 32, num_keypoints=17, tasks=("pose",))
    frame = synthetic_frame(spec, 0, n_persons=1)
    frame.keypoints_xy[0, 4] = np.nan
    w = Writer.create(str(tmp_path / "nan.zarr"), spec, job={"job_id": "nan"})
    w.add(frame)
    w.finalize()
    export_coco(open_result(tmp_path / "nan.zarr"), tmp_path / "res.json")
    (entry,) = json.loads((tmp_path / "res.json").read_text())
    assert entry["keypoints"][12:15] == [0, 0, 0] and entry["keypoints"][15] > 0
    with pytest.raises(ExportError, match="need the pose task"):
        export_coco(stores["maps"], tmp_path / "x.json")


@pytest.mark.parametrize(("name", "size"), [("k17", None), ("k133", None), ("maps", (20, 30))])
def test_png_label_maps_carry_the_store_palette(
    stores: dict[str, ResultReader], tmp_path: Path, name: str, size: tuple[int, int] | None
) -> None:
    r = stores[name]
    summary = export_png(r, tmp_path / "png", owner=True, size=size)
    assert (summary.frames, summary.files) == (5, 10)
    labels = r.attrs["job"].get("labels")
    if labels:  # the job's own palette wins
        palette = [tuple(c) for c in labels["seg_palette"]]
    else:
        palette = list(seg_classes("sapiens2" if r.spec.num_classes == 29 else "sapiens").palette)
    for i in range(5):
        f = r.frame(i, size=size)
        img = Image.open(tmp_path / "png" / f"{i:06d}.png")
        assert img.mode == "P"
        pal = img.getpalette()
        assert [tuple(pal[3 * j : 3 * j + 3]) for j in range(len(palette))] == palette
        np.testing.assert_array_equal(np.asarray(img), f.part)
        owner = Image.open(tmp_path / "png" / "person" / f"{i:06d}.png")
        assert owner.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(owner), f.person_map)
    with pytest.raises(ExportError, match="need the seg task"):
        export_png(_store(tmp_path / "p.zarr", tasks=("pose",)), tmp_path / "x")


@pytest.mark.parametrize("name", ["k308", "maps"])
def test_npz_per_frame_holds_the_store_arrays(
    stores: dict[str, ResultReader], tmp_path: Path, name: str
) -> None:
    r = stores[name]
    assert export_npz(r, tmp_path / "npz").files == 5
    for i in (2, 3):
        f = r.frame(i)
        with np.load(tmp_path / "npz" / f"{i:06d}.npz") as z:
            assert int(z["frame"]) == i and str(z["status"]) == "ok"
            np.testing.assert_array_equal(z["track_id"], f.persons.track_id)
            np.testing.assert_array_equal(z["box_xyxy"], f.persons.box_xyxy)
            for key in ("part", "person_map", "depth", "normal", "pointmap"):
                np.testing.assert_array_equal(z[key], getattr(f, key))
            assert ("keypoints_xy" in z) == r.spec.has("pose")
            if r.spec.has("pose"):
                np.testing.assert_array_equal(z["keypoints_xy"], f.persons.keypoints_xy)
                assert z["keypoint_names"].tolist() == list(GOLIATH_308.names)
            assert ("patch_box" in z) == (f.patches is not None)
            if f.patches is None:
                continue
            for field in ("part_patch", "depth_patch", "normal_patch", "pointmap_patch"):
                hw, flat = z[f"{field}_hw"], z[field]
                ends = np.cumsum(hw[:, 0] * hw[:, 1])
                assert flat.shape[0] == (ends[-1] if len(ends) else 0)
                for k, patch in enumerate(getattr(f.patches, field)):
                    start = ends[k - 1] if k else 0
                    got = flat[start : ends[k]].reshape(patch.shape)
                    np.testing.assert_array_equal(got, patch)
            np.testing.assert_array_equal(z["pointmap_scale"], f.patches.pointmap_scale)


def test_exports_read_one_frame_or_one_block_at_a_time(
    stores: dict[str, ResultReader], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = open_result(stores["k133"].uri)
    spans: list[int] = []
    for method in ("frame", "task_arrays", "persons", "_read_maps"):
        real = getattr(r, method)

        def spy(*a: object, _real: object = real, _m: str = method, **kw: object) -> object:
            ints = [v for v in a if isinstance(v, int)]
            start = ints[0]
            stop = ints[1] if len(ints) > 1 else start + 1
            spans.append(stop - start)
            return _real(*a, **kw)  # type: ignore[operator]

        monkeypatch.setattr(r, method, spy)
    export_coco(r, tmp_path / "c.json")
    export_png(r, tmp_path / "p")
    export_npz(r, tmp_path / "n")
    assert spans and max(spans) <= r.spec.frames_per_shard


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_export_cli_says_what_it_wrote_in_one_line(
    stores: dict[str, ResultReader], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = stores["k17"].uri
    out = tmp_path / "r.json"
    rc, stdout, err = _cli(capsys, "export", uri, "--format", "coco", "--out", str(out))
    assert rc == 0 and stdout.strip() == str(out)
    assert err == f"export coco: wrote 5 frames, 8 persons (1 file) to {out}\n"
    rc, _, err = _cli(capsys, "export", uri, "--format", "png", "--out", str(tmp_path / "p"))
    assert rc == 0 and err.startswith("export png: wrote 5 frames, 8 persons (5 files)")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--format", "npz", "--coco-17"], "--coco-17 is for --format coco, not npz"),
        (["--format", "png", "--images-json", "i.json"], "--images-json is for --format coco"),
        (["--format", "coco", "--owner"], "--owner is for --format png"),
        (["--format", "coco", "--size", "10,10"], "--size is for --format png,npz"),
        (["--format", "png", "--store", "none"], "no job or store 'none'"),
    ],
)
def test_export_bad_input_is_one_line_and_exit_code_2(
    stores: dict[str, ResultReader],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    match: str,
) -> None:
    target = stores["k17"].uri
    if "--store" in argv:
        target, argv = argv[-1], argv[:-2]
    rc, out, err = _cli(
        capsys,
        "export",
        target,
        *argv,
        "--out",
        str(tmp_path / "o"),
        "--output-root",
        str(tmp_path),
    )
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(match, err), err


USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", USAGE.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize(
    "spec_kw",
    [
        {"num_keypoints": 17},  # frame maps, every task
        {"tasks": ("pose", "seg"), "patch_size": (16, 12)},  # per person, K = 308
    ],
    ids=["maps", "patches"],
)
def test_the_usage_examples_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spec_kw: dict,
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = StoreSpec.for_source(48, 64, frames_per_shard=2, **spec_kw)
    w = Writer.create("out/results/JOB.zarr", spec, job={"job_id": "JOB"})
    for i in range(4):
        w.add(synthetic_frame(spec, i, n_persons=2))
    w.finalize()
    namespace: dict = {}
    for block in _blocks("python"):
        exec(compile(block, str(USAGE), "exec"), namespace)
    assert "export npz: wrote 4 frames, 8 persons (4 files)" in capsys.readouterr().out
    from flows.cli import _parser

    for block in _blocks("bash"):
        for line in block.splitlines():
            argv = shlex.split(line.split("#")[0].split(">")[0])
            assert argv[0] == "sapiens-stream", line
            _parser().parse_args(argv[1:])
