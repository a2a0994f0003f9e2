"""Per-person stores (schema v2): round trips, composition on read, rewrites, v1 stores.

Every test runs on a local directory and on memory:// (the ``place`` fixture).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr

from storage import (
    BlockWriter,
    PersonPatches,
    SchemaMismatchError,
    StoreSpec,
    Writer,
    compose_frame_maps,
    open_result,
)
from storage._encode import decode_normal
from storage.frame import FrameResult
from storage.synthetic import synthetic_frame

Place = Callable[[str], str]
JOB = {"job_id": "j-pp"}


@pytest.fixture
def spec() -> StoreSpec:
    """All tasks, per person: source 48 x 80, maps at 24 x 40, slots of 24 x 16, B = 4."""
    return StoreSpec.for_source(
        48, 80, num_keypoints=17, frames_per_shard=4, downscale=2, patch_size=(24, 16)
    )


def persons_of(i: int) -> int:
    return (i * 7) % 4  # 0..3 persons, including empty frames


def frame(spec: StoreSpec, i: int, n: int | None = None) -> FrameResult:
    return synthetic_frame(spec, i, n_persons=persons_of(i) if n is None else n)


def write(url: str, spec: StoreSpec, n: int, finalize: bool = True) -> Writer:
    w = Writer.create(url, spec, job=JOB)
    for i in range(n):
        w.add(frame(spec, i))
    if finalize:
        w.finalize()
    return w


def snapshot(url: str) -> dict[str, bytes]:
    """Every object of the store except the root metadata (it holds timings)."""
    fs, path = fsspec.core.url_to_fs(url)
    root = path.rstrip("/")
    return {n[len(root) + 1 :]: fs.cat_file(n) for n in fs.find(root) if n != f"{root}/zarr.json"}


def test_patches_round_trip_exactly(place: Place, spec: StoreSpec) -> None:
    url = place("rt")
    write(url, spec, 10)
    raw = zarr.open_group(url, mode="r")
    dtypes = {
        p: str(raw[p].dtype)
        for p in (
            "seg/part_patch",
            "seg/fg_patch",
            "depth/patch",
            "normal/patch",
            "depth/scale",
            "persons/patch_box",
            "pointmap/patch",
            "pointmap/scale",
        )
    }
    assert dtypes == {
        "seg/part_patch": "uint8",
        "seg/fg_patch": "uint8",
        "depth/patch": "float16",
        "normal/patch": "int8",
        "depth/scale": "float32",
        "persons/patch_box": "int32",
        "pointmap/patch": "float16",
        "pointmap/scale": "float32",
    }
    r = open_result(url)
    checked = 0
    for i in range(10):
        src, got = frame(spec, i), r.frame(i)
        assert got.patches is not None and len(got.patches) == src.num_persons
        assert np.array_equal(got.patches.patch_box, src.patch_box)
        row = int(r.read_frames(i, i + 1).person_offset[0])
        for k in range(src.num_persons):
            assert src.part_patch is not None and src.fg_patch is not None
            assert src.depth_patch is not None and src.depth_scale is not None
            assert src.normal_patch is not None
            assert np.array_equal(got.patches.part_patch[k], src.part_patch[k])
            assert np.array_equal(got.patches.fg_patch[k], src.fg_patch[k])
            stored = _raw_patch(raw, spec, "depth/patch", row + k)
            assert stored.dtype == np.float16
            assert np.array_equal(stored.view(np.uint16), src.depth_patch[k].view(np.uint16))
            exact = src.depth_patch[k].astype(np.float64) * float(src.depth_scale[k])
            rel = np.abs(got.patches.depth_patch[k] - exact) / np.abs(exact)
            assert got.patches.depth_patch[k].dtype == np.float32 and rel.max() <= 2**-11
            stored_n = _raw_patch(raw, spec, "normal/patch", row + k)
            assert np.array_equal(stored_n, src.normal_patch[k])
            assert np.array_equal(got.patches.normal_patch[k], decode_normal(src.normal_patch[k]))
            _check_pointmap(raw, spec, row + k, src, got.patches, k)
            checked += 1
    assert checked == sum(persons_of(i) for i in range(10))


def _check_pointmap(
    raw: zarr.Group, spec: StoreSpec, row: int, src: FrameResult, got: PersonPatches, k: int
) -> None:
    """Person ``k``: its raw xyz stored exactly, its scale read back, and the patch read as
    metric xyz = raw / scale (within float16 precision of the metric values)."""
    assert src.pointmap_patch is not None and src.pointmap_scale is not None
    assert got.pointmap_patch is not None and got.pointmap_scale is not None
    stored = _raw_patch(raw, spec, "pointmap/patch", row)
    assert stored.dtype == np.float16 and stored.shape == src.pointmap_patch[k].shape
    assert np.array_equal(stored.view(np.uint16), src.pointmap_patch[k].view(np.uint16))
    scale = float(src.pointmap_scale[k])
    assert float(raw["pointmap/scale"][row]) == scale == float(got.pointmap_scale[k])
    assert got.pointmap_scale.dtype == np.float32
    metric = got.pointmap_patch[k]
    assert metric.dtype == np.float32 and metric.shape == src.pointmap_patch[k].shape
    exact = src.pointmap_patch[k].astype(np.float64) / scale
    assert np.abs(metric - exact).max() <= 1e-6 * np.abs(exact).max()
    assert not np.allclose(metric, src.pointmap_patch[k], rtol=1e-2)  # divided, not raw


def _raw_patch(raw: zarr.Group, spec: StoreSpec, path: str, row: int) -> np.ndarray:
    """Person ``row``'s stored patch, found by the packing rule: its block's pixel segment,
    after the pixels (h * w) of the block's earlier rows."""
    per_block = spec.person_rows_per_block
    block = row // per_block
    hw = np.asarray(raw[f"{path.split('/')[0]}/patch_hw"][block * per_block : row + 1])
    start = block * spec.pixels_per_block + int(sum(int(h) * int(w) for h, w in hw[:-1]))
    h, w = (int(v) for v in hw[-1])
    flat = np.asarray(raw[path][start : start + h * w])
    return flat.reshape(h, w, *flat.shape[1:])


def test_frame_maps_are_composed_on_read(place: Place, spec: StoreSpec) -> None:
    url = place("maps")
    write(url, spec, 8)
    r = open_result(url)
    for i in (1, 2, 3, 6):
        src, got = frame(spec, i), r.frame(i)
        for size in ((24, 40), (48, 80), (7, 9)):
            want = compose_frame_maps(
                PersonPatches.from_frame_result(src),
                box_xyxy=src.box_xyxy,
                score=src.score,
                source_size=(48, 80),
                out_size=size,
            )
            got = r.frame(i, size=None if size == (24, 40) else size)
            assert got.part is not None and got.part.dtype == np.uint8 and got.part.shape == size
            assert np.array_equal(got.part, want.part)
            assert got.person_map is not None and got.person_map.dtype == np.uint16
            assert np.array_equal(got.person_map, want.person)
            assert got.depth is not None and got.depth.dtype == np.float32
            assert np.array_equal(got.depth, want.depth, equal_nan=True)
            assert got.normal is not None and got.normal.shape == (*size, 3)
            assert np.array_equal(got.normal, want.normal)
            assert got.pointmap is not None and got.pointmap.dtype == np.float32
            assert got.pointmap.shape == (*size, 3)
            assert np.array_equal(got.pointmap, want.pointmap, equal_nan=True)
            assert np.array_equal(np.isnan(got.pointmap).all(-1), got.person_map == 0)
        assert set(np.unique(got.person_map)) <= set(range(src.num_persons + 1))
    assert set(np.unique(r.frame(1).person_map)) == {0, 1, 2, 3}  # persons really own pixels


def test_task_arrays_compose_and_add_patches(place: Place, spec: StoreSpec) -> None:
    url = place("ta")
    write(url, spec, 8)
    r = open_result(url)
    counts = [persons_of(i) for i in range(2, 7)]
    seg = r.task_arrays("seg", 2, 7)
    assert set(seg) == {
        "part", "person", "part_patch", "fg_patch", "patch_hw", "patch_box", "person_offset",
    }  # fmt: skip
    assert seg["patch_hw"].tolist() == [list(p.shape) for p in seg["part_patch"]]
    assert seg["part"].shape == (5, 24, 40) and seg["person"].dtype == np.uint16
    assert seg["person_offset"].tolist() == np.concatenate([[0], np.cumsum(counts)]).tolist()
    assert len(seg["part_patch"]) == sum(counts) == seg["patch_box"].shape[0]
    depth = r.task_arrays("depth", 2, 7)
    normal = r.task_arrays("normal", 2, 7, size=(12, 20))
    xyz = r.task_arrays("pointmap", 2, 7)
    assert set(depth) == {"relative", "patch", "patch_hw", "patch_box", "person_offset"}
    assert normal["xyz"].shape == (5, 12, 20, 3)
    assert set(xyz) == {"xyz", "patch", "scale", "patch_hw", "patch_box", "person_offset"}
    assert xyz["xyz"].shape == (5, 24, 40, 3) and xyz["scale"].dtype == np.float32
    assert xyz["patch_hw"].tolist() == [list(p.shape[:2]) for p in xyz["patch"]]
    assert len(xyz["patch"]) == len(xyz["scale"]) == sum(counts)
    for j, i in enumerate(range(2, 7)):
        f = r.frame(i)
        assert np.array_equal(seg["part"][j], f.part)
        assert np.array_equal(seg["person"][j], f.person_map)
        assert np.array_equal(depth["relative"][j], f.depth, equal_nan=True)
        assert np.array_equal(normal["xyz"][j], r.frame(i, size=(12, 20)).normal)
        lo, hi = depth["person_offset"][j : j + 2]
        assert np.array_equal(xyz["xyz"][j], f.pointmap, equal_nan=True)
        for k in range(hi - lo):
            assert np.array_equal(depth["patch"][lo + k], f.patches.depth_patch[k])
            assert np.array_equal(xyz["patch"][lo + k], f.patches.pointmap_patch[k])
            assert xyz["scale"][lo + k] == f.patches.pointmap_scale[k]
    assert r.task_arrays("pose", 0, 8)["keypoints_xy"].shape == (
        sum(map(persons_of, range(8))),
        17,
        2,
    )


def test_xarray_view_of_a_finished_store_whose_tasks_have_other_patch_sizes(
    place: Place, spec: StoreSpec
) -> None:
    """Finalizing trims each task's pixel arrays to its own length (seg patches are half the
    depth patches' size here), so each task has its own pixel dimension."""
    url = place("xr-done")
    write(url, spec, 6)
    r = open_result(url)
    pytest.importorskip("xarray")
    ds = r.to_xarray()
    assert ds.sizes["seg_pixel"] < ds.sizes["depth_pixel"]
    k = sum(map(persons_of, range(5)))  # frame 5's first person
    f = r.frame(5)
    for task, field, got in (
        ("seg", "part_patch", f.patches.part_patch[0]),
        ("normal", "normal_patch", None),
    ):
        h, w = (int(v) for v in ds[f"{task}_patch_hw"].values[k])
        start = int(ds[f"{task}_pixel_start"].values[k])
        values = ds[field][start : start + h * w].values
        if got is not None:
            assert np.array_equal(values.reshape(h, w), got)
        else:
            assert values.shape == (h * w, 3)


def test_summary_and_xarray_view(place: Place, spec: StoreSpec) -> None:
    url = place("xr")
    write(url, spec, 6, finalize=False)
    r = open_result(url)
    assert r.summary().as_dict()["persons"] == sum(map(persons_of, range(4)))
    pytest.importorskip("xarray")
    ds = r.to_xarray()
    assert ds.attrs["patch_size"] == [24, 16]
    assert ds["part_patch"].dims == ("seg_pixel",)
    assert ds["normal_patch"].dims == ("normal_pixel", "component")
    assert {"depth_patch", "depth_scale", "seg_patch_hw", "depth_patch_hw", "patch_box"} <= set(
        ds.data_vars
    )
    assert "part" not in ds and "depth" not in ds  # frame maps come from composition
    f, k = r.frame(3), sum(map(persons_of, range(3)))  # frame 3's person in the view
    assert ds["person_frame"].values[k] == 3
    h, w = (int(v) for v in ds["seg_patch_hw"].values[k])
    start = int(ds["seg_pixel_start"].values[k])
    fg = ds["fg_patch"][start : start + h * w].values.reshape(h, w)
    assert np.array_equal(fg, f.patches.fg_patch[0])
    dh, dw = (int(v) for v in ds["depth_patch_hw"].values[k])
    start = int(ds["depth_pixel_start"].values[k])
    raw = ds["depth_patch"][start : start + dh * dw].values.reshape(dh, dw)
    scaled = raw.astype(np.float32) * ds["depth_scale"].values[k]
    assert np.array_equal(scaled, f.patches.depth_patch[0])
    names = {"pointmap_patch", "pointmap_scale", "pointmap_patch_hw", "pointmap_pixel_start"}
    assert names <= set(ds.data_vars) | set(ds.coords)
    assert ds["pointmap_patch"].dims == ("pointmap_pixel", "component")
    assert ds["pointmap_scale"].dims == ("person",) and ds["pointmap_patch_hw"].dims == (
        "person",
        "hw",
    )
    ph, pw = (int(v) for v in ds["pointmap_patch_hw"].values[k])
    start = int(ds["pointmap_pixel_start"].values[k])
    raw_xyz = ds["pointmap_patch"][start : start + ph * pw].values.reshape(ph, pw, 3)
    metric = raw_xyz.astype(np.float32) / ds["pointmap_scale"].values[k]
    assert np.array_equal(metric, f.patches.pointmap_patch[0])


def test_recommit_writes_identical_bytes(place: Place, spec: StoreSpec) -> None:
    url = place("recommit")
    w = write(url, spec, 8, finalize=False)
    before = snapshot(url)
    w.commit_block(1, [frame(spec, i) for i in range(4, 8)])
    assert snapshot(url) == before


def test_rewrite_of_a_torn_block_is_byte_identical(place: Place, spec: StoreSpec) -> None:
    """A writer killed in block 2 after writing other results with more persons (a retry
    need not see the same detections): the resumed store equals a clean one, byte for byte;
    the pixels the killed writer packed past the final persons are gone."""
    clean = place("clean")
    write(clean, spec, 11)
    url = place("torn")
    crashed = write(url, spec, 9, finalize=False)
    crashed.ensure_capacity(12)
    torn = BlockWriter(url)
    torn.write_block(2, [frame(spec, i, n=3) for i in range(8, 12)])  # 12 rows, 6 to keep
    torn._arrays["blocks/frames"][2:3] = 0  # the marker never made it
    del crashed
    w = Writer.resume(url)
    assert w.watermark == 8
    for i in (10, 8, 9):
        w.add(frame(spec, i))
    assert w.finalize() == 11
    assert snapshot(url) == snapshot(clean)


def test_block_writers_in_any_order(place: Place, spec: StoreSpec) -> None:
    clean = place("clean")
    write(clean, spec, 12)
    url = place("blocks")
    owner = Writer.create(url, spec, job=JOB, capacity_frames=12)
    other = BlockWriter(url)
    for block in (2, 0, 1):
        other.write_block(block, [frame(spec, i) for i in range(block * 4, block * 4 + 4)])
    assert owner.sync_watermark() == 12
    owner.finalize()
    assert snapshot(url) == snapshot(clean)


def _big_patch(r: FrameResult) -> FrameResult:
    assert r.part_patch is not None and r.patch_box is not None
    box = r.patch_box.copy()
    box[0] = (0, 0, 20, 30)
    big = np.zeros((30, 20), np.uint8)
    return dataclasses.replace(
        r, patch_box=box, part_patch=(big, *r.part_patch[1:]), fg_patch=(big, *r.part_patch[1:])
    )


def test_spec_mismatches(place: Place, spec: StoreSpec) -> None:
    w = Writer.create(place("mm"), spec, job=JOB)
    maps_spec = dataclasses.replace(spec, patch_size=None)
    with pytest.raises(
        SchemaMismatchError, match=r"frame maps for \('seg', 'depth', 'normal', 'pointmap'\)"
    ):
        w.add(synthetic_frame(maps_spec, 0))
    with pytest.raises(
        SchemaMismatchError, match=r"part_patch\[0\] of 30x20 does not fit .* 24x16"
    ):
        w.add(_big_patch(frame(spec, 0, n=2)))
    r = frame(spec, 0, n=1)
    assert r.patch_box is not None
    with pytest.raises(SchemaMismatchError, match="patch_box reaches past the source frame"):
        w.add(dataclasses.replace(r, patch_box=r.patch_box + np.array([0, 0, 80, 0], np.int32)))
    v1 = Writer.create(place("maps"), maps_spec, job=JOB)
    with pytest.raises(SchemaMismatchError, match=r"per-person patches for .* in a store of frame"):
        v1.add(frame(spec, 0))
    assert w.watermark == v1.watermark == 0


def test_frame_map_store_still_reads_the_same(place: Place, spec: StoreSpec) -> None:
    maps_spec = dataclasses.replace(spec, patch_size=None)
    url = place("v1")
    write(url, maps_spec, 6)
    r = open_result(url)
    raw = zarr.open_group(url, mode="r")
    assert "seg/part" in raw and "seg/part_patch" not in raw and "persons/patch_box" not in raw
    f, src = r.frame(5), synthetic_frame(maps_spec, 5, n_persons=persons_of(5))
    assert f.patches is None and np.array_equal(f.part, src.part)
    assert r.frame(5, size=(12, 20)).depth.shape == (12, 20)


def _as_v1(url: str) -> None:
    """Rewrite the root metadata the way schema v1 wrote it: version 1, no patch_size."""
    fs, path = fsspec.core.url_to_fs(url)
    meta_path = f"{path.rstrip('/')}/zarr.json"
    meta = json.loads(fs.cat_file(meta_path))
    own = meta["attributes"]["sapiens_stream"]
    own["schema_version"] = 1
    del own["layout"]["patch_size"]
    fs.pipe_file(meta_path, json.dumps(meta).encode())


def test_a_v1_store_opens_reads_and_resumes(place: Place, spec: StoreSpec) -> None:
    maps_spec = dataclasses.replace(spec, patch_size=None)
    url = place("old")
    w = write(url, maps_spec, 6, finalize=False)
    del w
    _as_v1(url)
    r = open_result(url)
    assert r.attrs["schema_version"] == 1 and r.spec.patch_size is None
    assert np.array_equal(
        r.frame(2).part, synthetic_frame(maps_spec, 2, n_persons=persons_of(2)).part
    )
    w = Writer.resume(url)
    w.add(synthetic_frame(maps_spec, 4, n_persons=1))
    w.add(synthetic_frame(maps_spec, 5, n_persons=1))
    assert w.finalize() == 6
    assert open_result(url).attrs["schema_version"] == 1


def test_unknown_schema_versions_are_refused(place: Place, spec: StoreSpec) -> None:
    url = place("v3")
    write(url, spec, 1)
    fs, path = fsspec.core.url_to_fs(url)
    meta_path = f"{path.rstrip('/')}/zarr.json"
    meta = json.loads(fs.cat_file(meta_path))
    meta["attributes"]["sapiens_stream"]["schema_version"] = 3
    fs.pipe_file(meta_path, json.dumps(meta).encode())
    with pytest.raises(SchemaMismatchError, match=r"schema_version 3 is not supported.*\[1, 2\]"):
        open_result(url)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_local_stale_pixels_leave_no_files_behind(
    tmp_path: Path, spec: StoreSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block whose every pixel is reset loses its shard object, durably: the removal is
    followed by a fsync of the shard's directory."""
    import os

    url = str(tmp_path / "gone.zarr")
    w = write(url, spec, 4, finalize=False)
    shard = tmp_path / "gone.zarr" / "seg" / "part_patch" / "c.0"
    assert shard.exists()
    synced: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), shard.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    w.commit_block(0, [frame(spec, i, n=0) for i in range(4)])
    assert not shard.exists()
    assert (str(shard.parent), False) in synced  # the directory, after the removal
    assert not list((tmp_path / "gone.zarr").rglob("*.partial"))
