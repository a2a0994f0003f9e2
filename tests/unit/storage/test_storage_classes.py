"""Part-label classes: 28 (Sapiens) or 29 (Sapiens2, "Eyeglass" at index 2) per store.

A frame may carry labels up to 28; the store checks them against its ``num_classes`` when the
frame is written. Every test runs in both layouts (frame maps and per person) and on a local
directory and memory:// (the ``place`` fixture).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import nullcontext as does_not_raise
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr

from storage import SchemaMismatchError, StoreSpec, Writer, open_result
from storage.frame import FrameResult
from storage.synthetic import synthetic_frame

Place = Callable[[str], str]
LAYOUTS = {"maps": None, "per person": (24, 16)}


def _spec(num_classes: int, patch_size: tuple[int, int] | None) -> StoreSpec:
    return StoreSpec.for_source(
        48, 80, tasks=("seg", "pointmap"), frames_per_shard=2, patch_size=patch_size,
        num_classes=num_classes,
    )  # fmt: skip


def _with_label(r: FrameResult, label: int) -> FrameResult:
    """``r`` with its first person's (or the map's) labelled pixels set to ``label``."""
    if r.part is not None:
        return dataclasses.replace(r, part=np.where(r.part > 0, label, 0).astype(np.uint8))
    assert r.part_patch is not None
    first = np.where(r.part_patch[0] > 0, label, 0).astype(np.uint8)
    return dataclasses.replace(r, part_patch=(first, *r.part_patch[1:]))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("num_classes", "label", "expectation"),
    [
        (29, 28, does_not_raise()),
        (28, 27, does_not_raise()),
        (
            28,
            28,
            pytest.raises(
                SchemaMismatchError,
                match=r"^frame 1: part(_patch\[0\])?: expected labels 0\.\.27 \(the store's "
                r"num_classes=28\), got 28; .*StoreSpec\(num_classes=29\)$",
            ),
        ),
    ],
)
def test_labels_are_checked_against_the_store(
    place: Place, layout: str, num_classes: int, label: int, expectation: Any
) -> None:
    spec = _spec(num_classes, LAYOUTS[layout])
    url = place("classes")
    w = Writer.create(url, spec, job={"job_id": "classes"})
    w.add(synthetic_frame(spec, 0, n_persons=2))
    with expectation:
        w.add(_with_label(synthetic_frame(spec, 1, n_persons=2), label))
        assert w.finalize() == 2
        f = open_result(url).frame(1)
        assert f.part is not None and int(f.part.max()) == label  # read back as written
        if f.patches is not None:
            assert f.patches.part_patch is not None
            assert int(f.patches.part_patch[0].max()) == label
    if not isinstance(expectation, does_not_raise):
        assert w.watermark == 0 and w.pending_frames == 1  # the bad frame was not taken


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("num_classes", [28, 29])
def test_class_count_is_recorded(place: Place, layout: str, num_classes: int) -> None:
    spec = _spec(num_classes, LAYOUTS[layout])
    url = place("recorded")
    Writer.create(url, spec, job={"job_id": "classes"}).finalize()
    raw = zarr.open_group(url, mode="r")
    part = "seg/part" if LAYOUTS[layout] is None else "seg/part_patch"
    assert raw[part].attrs["classes"] == num_classes
    r = open_result(url)
    assert r.spec.num_classes == num_classes
    assert ("num_classes" in r.attrs["layout"]) == (num_classes == 29)


def test_a_store_without_num_classes_reads_as_28(place: Place) -> None:
    """A v2 store written before ``num_classes`` existed: its layout has no such key."""
    spec = _spec(28, LAYOUTS["per person"])
    url = place("older")
    w = Writer.create(url, spec, job={"job_id": "older"})
    for i in range(2):
        w.add(synthetic_frame(spec, i, n_persons=1))
    fs, path = fsspec.core.url_to_fs(url)
    meta = json.loads(fs.cat_file(f"{path.rstrip('/')}/zarr.json"))
    assert "num_classes" not in meta["attributes"]["sapiens_stream"]["layout"]
    r = open_result(url)
    assert r.spec == spec and r.spec.num_classes == 28 and r.num_frames == 2
