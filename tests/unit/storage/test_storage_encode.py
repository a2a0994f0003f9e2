"""Quantisation precision, resampling and range checks of the on-disk encoding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from storage._encode import assemble_block, decode_normal, encode_frame
from storage.errors import SchemaMismatchError
from storage.schema import StoreSpec, ZarrLayout
from storage.synthetic import synthetic_frame


def test_keypoints_keep_one_128th_pixel(small_spec: StoreSpec) -> None:
    r = synthetic_frame(small_spec, 0, n_persons=3)
    enc = encode_frame(ZarrLayout.from_spec(small_spec), r)
    err = np.abs(enc.persons["pose/keypoints_xy"] - r.keypoints_xy)
    assert err.max() <= 1 / 128 + 1e-6


@pytest.mark.parametrize(
    ("field", "path"), [("depth", "depth/relative"), ("pointmap", "pointmap/xyz")]
)
def test_float16_maps_relative_error(small_spec: StoreSpec, field: str, path: str) -> None:
    r = synthetic_frame(small_spec, 1, n_persons=3)
    enc = encode_frame(ZarrLayout.from_spec(small_spec), r)
    values = getattr(r, field)
    stored = enc.maps[path].astype(np.float32)
    assert enc.maps[path].dtype == np.float16 and stored.shape == values.shape
    on = np.isfinite(values)
    assert on.any() and not on.all()
    assert np.array_equal(np.isfinite(stored), on)  # NaN stays exactly off-person
    rel = np.abs(stored[on] - values[on]) / np.abs(values[on])
    assert rel.max() <= 2.0**-11


def test_normals_angle_error_below_half_degree() -> None:
    rng = np.random.default_rng(0)
    n = rng.normal(size=(64, 64, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[:8] = 0.0  # off-person
    spec = StoreSpec(height=64, width=64, source_height=64, source_width=64, tasks=("normal",))
    r = synthetic_frame(spec, 0, n_persons=0)
    enc = encode_frame(ZarrLayout.from_spec(spec), dataclasses.replace(r, normal=n))
    back = decode_normal(enc.maps["normal/xyz"])
    assert np.all(back[:8] == 0)
    cos = np.clip(np.sum(back[8:] * n[8:], axis=-1), -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 0.5
    assert np.allclose(np.linalg.norm(back[8:], axis=-1), 1.0, atol=1e-6)


def test_source_size_maps_are_downsampled_nearest() -> None:
    spec = StoreSpec.for_source(40, 60, downscale=2, tasks=("seg",))
    full = StoreSpec.for_source(40, 60, tasks=("seg",))
    r = synthetic_frame(full, 0, n_persons=2)
    enc = encode_frame(ZarrLayout.from_spec(spec), r)
    assert enc.maps["seg/part"].shape == (20, 30)
    assert np.array_equal(enc.maps["seg/part"], r.part[1::2, 1::2])
    assert set(np.unique(enc.maps["seg/person"])) <= set(np.unique(r.person_map))


def test_other_map_sizes_are_rejected() -> None:
    spec = StoreSpec.for_source(40, 60, downscale=2, tasks=("depth",))
    r = synthetic_frame(StoreSpec.for_source(30, 60, tasks=("depth",)), 0)
    with pytest.raises(SchemaMismatchError, match=r"expected maps of size .* got \(30, 60\)"):
        encode_frame(ZarrLayout.from_spec(spec), r)


def test_range_checks(small_spec: StoreSpec) -> None:
    layout = ZarrLayout.from_spec(small_spec)
    r = synthetic_frame(small_spec, 0, n_persons=1)
    with pytest.raises(SchemaMismatchError, match="float16 range"):
        encode_frame(layout, dataclasses.replace(r, depth=np.full((24, 40), 1e6, np.float32)))
    far = np.full((24, 40, 3), np.nan, np.float32)
    far[3, 4] = (1.0, -7e4, 2.0)
    with pytest.raises(
        SchemaMismatchError,
        match=r"^frame 0: pointmap: expected \|values\| <= 65504 \(the float16 range .*got 70000",
    ):
        encode_frame(layout, dataclasses.replace(r, pointmap=far))
    far[3, 4] = (1.0, -6e4, 2.0)  # within range
    assert (
        encode_frame(layout, dataclasses.replace(r, pointmap=far)).maps["pointmap/xyz"][3, 4, 1]
        == -6e4
    )
    with pytest.raises(SchemaMismatchError, match=r"must lie in \[-1, 1\]"):
        encode_frame(layout, dataclasses.replace(r, normal=np.full((24, 40, 3), 2, np.float32)))


def test_spec_mismatches_are_reported(small_spec: StoreSpec) -> None:
    layout = ZarrLayout.from_spec(small_spec)
    other = StoreSpec.for_source(24, 40, tasks=("pose",), num_keypoints=17)
    with pytest.raises(SchemaMismatchError, match=r"expected results for tasks .* got \('pose',\)"):
        encode_frame(layout, synthetic_frame(other, 0))
    crowd = dataclasses.replace(small_spec, max_persons_per_frame=2)
    with pytest.raises(SchemaMismatchError, match="3 persons exceed max_persons_per_frame=2"):
        encode_frame(ZarrLayout.from_spec(crowd), synthetic_frame(small_spec, 0, n_persons=3))
    k133 = dataclasses.replace(small_spec, num_keypoints=133)
    with pytest.raises(SchemaMismatchError, match="expected 133 keypoints, got 17"):
        encode_frame(ZarrLayout.from_spec(k133), synthetic_frame(small_spec, 0))


def test_block_assembly_packs_persons(small_spec: StoreSpec) -> None:
    layout = ZarrLayout.from_spec(small_spec)
    frames = [
        encode_frame(layout, synthetic_frame(small_spec, 4 + i, n_persons=i)) for i in (0, 1, 2)
    ]
    rows = assemble_block(layout, 1, frames)
    base = small_spec.person_rows_per_block
    assert rows["frames/person_offset"][:3].tolist() == [base, base, base + 1]
    assert rows["frames/person_count"].tolist() == [0, 1, 2, 0]
    assert rows["persons/frame"][:4].tolist() == [5, 6, 6, -1]
    assert rows["blocks/frames"].tolist() == [3]
    assert np.isnan(rows["frames/time_s"][3])
    with pytest.raises(SchemaMismatchError, match=r"block 1: expected frames 4.. in order"):
        assemble_block(layout, 1, frames[1:])


def test_per_person_block_assembly_leaves_pixels_out() -> None:
    """Pixel arrays are never assembled as a whole block; per-person rows are packed."""
    spec = StoreSpec.for_source(48, 80, num_keypoints=17, frames_per_shard=4, patch_size=(24, 16))
    layout = ZarrLayout.from_spec(spec)
    frames = [encode_frame(layout, synthetic_frame(spec, i, n_persons=i)) for i in (0, 1, 2)]
    rows = assemble_block(layout, 0, frames)
    assert not {a.path for a in layout.arrays if a.packed} & set(rows)
    assert rows["seg/patch_hw"][:3].tolist() == [
        list(p.shape) for f in frames for p in f.patches["seg/part_patch"]
    ]
    assert rows["seg/patch_hw"][3:].max() == 0 and rows["persons/patch_box"][3:].min() == -1
    assert np.isnan(rows["depth/scale"][3:]).all()
    assert len(frames[2].patches["normal/patch"]) == 2


def test_pixel_spans_follow_the_blocks_patch_sizes() -> None:
    """A person's pixels start at its block's segment plus the pixels of the block's earlier
    rows (reference: the packing rule written out by hand)."""
    from storage._pixels import pixel_spans

    hw = np.zeros((12, 2), np.int32)  # 2 blocks of 6 rows
    hw[:3] = [[2, 3], [4, 5], [1, 1]]
    hw[6:8] = [[3, 3], [2, 2]]
    starts, sizes = pixel_spans(hw, np.array([1, 2, 6, 7]), 6, 1000)
    assert starts.tolist() == [6, 6 + 20, 1000, 1009]
    assert sizes.tolist() == [20, 1, 9, 4]
