"""Writer + reader conformance suite, run on a local directory and on memory://."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import fsspec
import numpy as np
import pytest

from storage import (
    BlockWriter,
    FrameNotCommittedError,
    SchemaMismatchError,
    StorageError,
    StoreNotFoundError,
    StoreSpec,
    Writer,
    open_result,
)
from storage._encode import decode_normal
from storage.synthetic import synthetic_frame

JOB = {"job_id": "j-test", "spec": {"video": "clip.mp4"}}
MODELS = [{"name": "sapiens-0.3b-pose", "task": "pose", "checkpoint_sha256": None,
           "random_weights": True}]  # fmt: skip


def persons_of(i: int) -> int:
    return (i * 7) % 4  # 0..3 persons, including empty frames


def frame(spec: StoreSpec, i: int):
    return synthetic_frame(spec, i, n_persons=persons_of(i))


class StoreSuite:
    """Every store backend must pass these; subclasses provide ``url``."""

    @pytest.fixture
    def url(self) -> str:
        raise NotImplementedError

    def snapshot(self, url: str) -> dict[str, bytes]:
        """Every object of the store except the root metadata (it holds timings)."""
        fs, path = fsspec.core.url_to_fs(url)
        out = {}
        for name in fs.find(path):
            rel = name[len(path.rstrip("/")) + 1 :] if name.startswith(path) else name
            if rel != "zarr.json":
                out[rel] = fs.cat_file(name)
        return out

    def write_all(
        self, url: str, spec: StoreSpec, n: int, order: list[int] | None = None
    ) -> Writer:
        w = Writer.create(url, spec, job=JOB, models=MODELS, source={"uri": "clip.mp4"})
        for i in order if order is not None else range(n):
            w.add(frame(spec, i))
        return w

    def test_out_of_order_frames_commit_in_order(self, url: str, small_spec: StoreSpec) -> None:
        w = Writer.create(url, small_spec, job=JOB)
        seen = [w.add(frame(small_spec, i)) for i in [5, 1, 0, 3, 2, 4, 7, 9, 6, 8]]
        assert seen == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]
        assert w.pending_frames == 2
        assert w.finalize() == 10

    def test_reader_serves_only_committed_frames(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 7)
        r = open_result(url)
        assert (r.num_frames, r.status) == (4, "running")
        with pytest.raises(FrameNotCommittedError, match=r"frames \[4, 5\) requested, 4 committed"):
            r.frame(4)
        w.finalize()
        assert r.num_frames == 4  # a snapshot until refresh
        assert r.refresh() == 7
        assert r.status == "complete"
        assert r.frame(6).index == 6

    def test_frame_round_trip(self, url: str, small_spec: StoreSpec) -> None:
        self.write_all(url, small_spec, 8)
        r = open_result(url)
        for i in (1, 6):
            src, got = frame(small_spec, i), r.frame(i)
            assert (got.source_index, got.pts, got.time_s) == (
                src.source_index,
                src.pts,
                src.time_s,
            )
            assert np.array_equal(got.persons.track_id, src.track_id)
            assert np.array_equal(got.persons.box_xyxy, src.box_xyxy)
            assert np.allclose(got.persons.keypoints_xy, src.keypoints_xy, atol=1 / 128)
            assert np.allclose(got.persons.keypoint_score, src.keypoint_score, atol=1e-3)
            assert np.array_equal(got.part, src.part)
            assert np.array_equal(got.person_map, src.person_map)
            assert np.allclose(got.depth, src.depth, rtol=2**-11, equal_nan=True)
            assert np.array_equal(np.isnan(got.depth), np.isnan(src.depth))
            assert np.abs(got.normal - src.normal).max() < 0.01
            assert got.pointmap is not None and got.pointmap.dtype == np.float32
            assert got.pointmap.shape == (24, 40, 3)
            on = np.isfinite(src.pointmap)
            assert on.any() and np.array_equal(np.isfinite(got.pointmap), on)  # NaN off-person
            rel = np.abs(got.pointmap[on] - src.pointmap[on]) / np.abs(src.pointmap[on])
            assert rel.max() <= 2**-11  # metric xyz within float16 precision
            assert got.patches is None

    def test_queries(self, url: str, small_spec: StoreSpec) -> None:
        self.write_all(url, small_spec, 12).finalize()
        r = open_result(url)
        assert r.time_range(0.1, 0.2).tolist() == [3, 4]  # 25 fps
        counts = [persons_of(i) for i in range(12)]
        assert r.read_frames().person_count.tolist() == counts
        assert len(r.persons(2, 6)) == sum(counts[2:6])
        track = r.track(101)
        assert track.frames.tolist() == [i for i in range(12) if counts[i] >= 2]
        assert np.all(track.persons.track_id == 101)
        assert r.track(999).frames.size == 0
        assert r.track_ids().tolist() == [100, 101, 102]
        pose = r.task_arrays("pose", 2, 6)
        assert (
            pose["person_offset"].tolist() == np.concatenate([[0], np.cumsum(counts[2:6])]).tolist()
        )
        assert pose["keypoints_xy"].shape == (sum(counts[2:6]), 17, 2)
        assert r.task_arrays("normal", 0, 3)["xyz"].shape == (3, 24, 40, 3)
        assert r.task_arrays("seg", 0, 3)["person"].dtype == np.uint16
        xyz = r.task_arrays("pointmap", 2, 5)
        assert set(xyz) == {"xyz"} and xyz["xyz"].shape == (3, 24, 40, 3)
        assert xyz["xyz"].dtype == np.float32
        assert np.array_equal(xyz["xyz"][1], r.frame(3).pointmap, equal_nan=True)
        small = r.task_arrays("pointmap", 2, 5, size=(12, 20))["xyz"]
        assert np.array_equal(small[1], r.frame(3, size=(12, 20)).pointmap, equal_nan=True)
        summary = r.summary().as_dict()
        assert summary["frames"] == 12 and summary["persons"] == sum(counts)
        assert summary["tracks"] == 3 and summary["job_id"] == "j-test"
        assert [m.to_dict() for m in r.models] == [{**MODELS[0], "source": None}]
        assert r.attrs["source"] == {"uri": "clip.mp4"}

    def test_xarray_view(self, url: str, small_spec: StoreSpec) -> None:
        pytest.importorskip("xarray")
        self.write_all(url, small_spec, 6)
        r = open_result(url)
        ds = r.to_xarray()
        assert ds.sizes["frame"] == 4  # committed frames only
        assert ds.sizes["person"] == sum(persons_of(i) for i in range(4))
        assert ds["person_frame"].values.tolist() == r.persons(0, 4).frame.tolist()
        assert np.array_equal(ds["part"].values, r.task_arrays("seg", 0, 4)["part"])
        raw = np.rint(ds["normal"].values[2] * 127).astype(np.int8)
        assert np.allclose(decode_normal(raw), r.frame(2).normal)
        assert set(ds.data_vars) >= {"keypoints_xy", "depth", "person_map", "track_id"}
        assert ds["pointmap_xyz"].dims == ("frame", "y", "x", "component")
        assert ds["pointmap_xyz"].dtype == np.float16
        assert np.array_equal(ds["pointmap_xyz"].values[2], r.frame(2).pointmap, equal_nan=True)

    def test_recommit_writes_identical_bytes(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 8)
        before = self.snapshot(url)
        w.commit_block(1, [frame(small_spec, i) for i in range(4, 8)])
        assert self.snapshot(url) == before
        assert w.watermark == 8

    def test_commit_block_must_be_next(self, url: str, small_spec: StoreSpec) -> None:
        w = Writer.create(url, small_spec, job=JOB)
        with pytest.raises(SchemaMismatchError, match="block 1 is not next"):
            w.commit_block(1, [frame(small_spec, i) for i in range(4, 8)])

    def test_resume_after_crash_is_byte_identical(
        self, url: str, clean_url: str, small_spec: StoreSpec
    ) -> None:
        clean = self.write_all(clean_url, small_spec, 11)
        clean.finalize()
        crashed = self.write_all(url, small_spec, 9)  # blocks 0, 1 committed; frame 8 pending
        crashed.ensure_capacity(12)
        # Simulated crash in the middle of block 2: some arrays written, no marker, no watermark.
        torn = BlockWriter(url)
        rows = [frame(small_spec, i) for i in range(8, 12)]
        torn.write_block(2, rows)
        torn._arrays["blocks/frames"][2:3] = 0  # the marker never made it
        torn._arrays["depth/relative"][8:12] = np.float16(7)  # garbage in one array
        del crashed
        w = Writer.resume(url)
        assert w.watermark == 8
        for i in (10, 8, 9):
            w.add(frame(small_spec, i))
        assert w.finalize() == 11
        assert self.snapshot(url) == self.snapshot(clean_url)

    def test_resume_adopts_blocks_with_markers(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 4)
        other = BlockWriter(url)
        w.ensure_capacity(12)
        other.write_block(1, [frame(small_spec, i) for i in range(4, 8)])
        other.write_block(2, [frame(small_spec, i) for i in range(8, 12)])
        assert open_result(url).num_frames == 4
        assert Writer.resume(url).watermark == 12
        assert open_result(url).num_frames == 12

    def test_arrays_grow_and_readers_follow(self, url: str, small_spec: StoreSpec) -> None:
        w = Writer.create(url, small_spec, job=JOB, capacity_frames=4)
        w.add(frame(small_spec, 0))
        r = open_result(url)
        for i in range(1, 21):
            w.add(frame(small_spec, i))
        assert r.refresh() == 20
        assert r.frame(19).index == 19
        assert BlockWriter(url).capacity_blocks() >= 5

    def test_block_writer_cannot_grow(self, url: str, small_spec: StoreSpec) -> None:
        Writer.create(url, small_spec, job=JOB, capacity_frames=4)
        with pytest.raises(SchemaMismatchError, match="only the owning Writer grows"):
            BlockWriter(url).write_block(3, [frame(small_spec, i) for i in range(12, 16)])

    def test_finalize_trims_and_consolidates(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 6)
        w.finalize(timings={"decode_s": 1.5})
        r = open_result(url)
        assert r.attrs["timings"]["decode_s"] == 1.5
        assert r._arrays["frames/time_s"].shape == (6,)
        assert r._arrays["persons/track_id"].shape[0] == r.attrs["person_rows"]
        assert r._arrays["blocks/frames"].shape == (2,)
        with pytest.raises(StorageError, match="only running stores resume"):
            Writer.resume(url)

    def test_finalize_with_a_gap_fails(self, url: str, small_spec: StoreSpec) -> None:
        w = Writer.create(url, small_spec, job=JOB)
        w.add(frame(small_spec, 1))
        with pytest.raises(SchemaMismatchError, match=r"frames \[0\] .* never arrived"):
            w.finalize()

    def test_duplicates_below_watermark_are_dropped(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 4)
        before = self.snapshot(url)
        assert w.add(frame(small_spec, 2)) == 4
        assert self.snapshot(url) == before

    def test_create_twice_fails(self, url: str, small_spec: StoreSpec) -> None:
        Writer.create(url, small_spec, job=JOB)
        with pytest.raises(StorageError, match="already exists"):
            Writer.create(url, small_spec, job=JOB)

    def test_bad_model_entry(self, url: str, small_spec: StoreSpec) -> None:
        with pytest.raises(SchemaMismatchError, match=r"lacks keys \['checkpoint_sha256'"):
            Writer.create(url, small_spec, job=JOB, models=[{"name": "x", "task": "pose"}])

    def test_mark_failed(self, url: str, small_spec: StoreSpec) -> None:
        w = self.write_all(url, small_spec, 5)
        w.mark_failed("decoder crashed")
        r = open_result(url)
        assert (r.status, r.num_frames, r.attrs["error"]) == ("failed", 4, "decoder crashed")

    @pytest.mark.parametrize("task", ["pose", "seg", "depth", "normal", "pointmap"])
    def test_single_task_downscaled(self, url: str, task: str) -> None:
        spec = StoreSpec.for_source(48, 80, tasks=(task,), downscale=2, frames_per_shard=2,
                                    num_keypoints=17)  # fmt: skip
        full = dataclasses.replace(spec, height=48, width=80)
        w = Writer.create(url, spec, job=JOB)
        for i in range(3):
            w.add(synthetic_frame(full, i, n_persons=2))  # maps at source size
        w.finalize()
        r = open_result(url)
        arrays = r.task_arrays(task)
        assert r.num_frames == 3
        if task != "pose":
            assert next(iter(arrays.values())).shape[1:3] == (24, 40)
        other = next(t for t in ("pose", "depth") if t != task)
        with pytest.raises(SchemaMismatchError, match=f"task '{other}' is not in this store"):
            r.task_arrays(other)  # type: ignore[arg-type]

    def test_empty_store(self, url: str, small_spec: StoreSpec) -> None:
        Writer.create(url, small_spec, job=JOB).finalize()
        r = open_result(url)
        assert r.summary().frames == 0
        assert r.track(1).frames.size == 0
        assert len(r.read_frames()) == 0


class TestLocalStore(StoreSuite):
    @pytest.fixture
    def url(self, tmp_path: Path) -> str:
        return str(tmp_path / "job.zarr")

    @pytest.fixture
    def clean_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "clean.zarr")

    def test_missing_store(self, tmp_path: Path) -> None:
        with pytest.raises(StoreNotFoundError, match="no result store at"):
            open_result(tmp_path / "nope.zarr")

    def test_not_a_result_store(self, tmp_path: Path) -> None:
        import zarr

        zarr.open_group(tmp_path / "other.zarr", mode="w")
        with pytest.raises(SchemaMismatchError, match="not a sapiens-stream store"):
            open_result(tmp_path / "other.zarr")


class TestMemoryStore(StoreSuite):
    @pytest.fixture
    def url(self, memory_url: str) -> str:
        return memory_url

    @pytest.fixture
    def clean_url(self, memory_url: str) -> str:
        return memory_url.replace("store.zarr", "clean.zarr")

    def test_missing_store(self, memory_url: str) -> None:
        with pytest.raises(StoreNotFoundError):
            open_result(memory_url)
