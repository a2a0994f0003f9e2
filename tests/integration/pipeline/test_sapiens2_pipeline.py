"""Sapiens2 through the whole pipeline: the shared clip with a tiny random-weight Sapiens2 and
every task it serves (pointmap included, depth from the pointmap's z) gives a complete store,
per-person and composed results, xarray variables, its licence in the provenance, and a render.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.inline import run_inline
from flows.plan import plan_job
from flows.render import render
from flows.run import run_on_ray
from flows.spec import JobSpec
from models.metadata import seg_classes
from storage import open_result
from tests.integration.pipeline.test_run import moving_boxes

pytestmark = pytest.mark.ray

STRIDE = 85  # 5 sampled frames
TASKS = ["pose", "seg", "depth", "normal", "pointmap"]


def _spec(clip: Path, root: Path, job_id: str, **extra: object) -> JobSpec:
    raw: dict[str, object] = {
        "source": str(clip),
        "job_id": job_id,
        "output_root": str(root),
        "model": {"family": "sapiens2", "size": "tiny"},
        "tasks": TASKS,
        "detector": "boxes",
        "boxes": moving_boxes(STRIDE),
        "sampling": {"stride": STRIDE},
        "max_side": 160,
        "batch_size": 4,
    }
    raw.update(extra)
    return JobSpec.from_dict(raw)


def test_crop_mode_store_query_xarray_provenance_and_render(
    ray_cluster, shared_clip: Path, tmp_path: Path
) -> None:
    out = run_on_ray(plan_job(_spec(shared_clip, tmp_path, "s2-crop")))
    assert out.state == "succeeded", out.error
    reader = open_result(out.store_url)
    spec = reader.spec
    assert reader.num_frames == 5 and spec.tasks == tuple(TASKS) and spec.num_classes == 29
    assert spec.patch_size is not None  # per-person results
    # the licence and the family reach the store's provenance
    models = reader.attrs["models"]
    assert {m["name"] for m in models} == {"sapiens2-tiny"}
    assert all(m["licence"].startswith("Sapiens2 License: prohibits surveillance") for m in models)
    for i in range(reader.num_frames):
        frame = reader.frame(i)
        n = len(frame.persons)
        assert n >= 1
        patches = frame.patches
        assert patches is not None and len(patches.pointmap_patch) == n
        assert patches.pointmap_scale.shape == (n,) and np.isfinite(patches.pointmap_scale).all()
        assert frame.pointmap.shape == (*frame.part.shape, 3)
        owned = frame.person_map > 0
        # depth is the pointmap's metric z: both sampled at the same patch pixels
        np.testing.assert_allclose(
            frame.depth[owned], frame.pointmap[..., 2][owned], rtol=4e-3, atol=1e-3
        )
        assert np.isnan(frame.pointmap[~owned]).all()
        assert int(frame.part.max()) < 29
    ds = reader.to_xarray()
    assert {"pointmap_patch", "pointmap_scale", "pointmap_patch_hw"} <= set(ds.data_vars)
    labels = reader.attrs["job"]["labels"]
    assert labels["family"] == "sapiens2" and len(labels["keypoints"]) == 308
    assert labels["seg_classes"] == list(seg_classes("sapiens2").names)
    png = render(out.store_url, tmp_path / "s2.png", frame=2, height=96)
    image = np.asarray(Image.open(png))
    # frame + skeletons | parts | depth | normals | pointmap z: five tiles side by side
    assert image.shape[0] == 96 and image.shape[1] >= 5 * 96 * 0.5


def test_whole_frame_mode_stores_metric_pointmap_maps(shared_clip: Path, tmp_path: Path) -> None:
    spec = _spec(
        shared_clip,
        tmp_path,
        "s2-frame",
        dense_mode="frame",
        tasks=["seg", "depth", "pointmap"],
        sampling={"stride": 170},
    )
    out = run_inline(plan_job(spec))
    assert out.state == "succeeded", out.error
    reader = open_result(out.store_url)
    assert reader.spec.patch_size is None and reader.num_frames == 3
    frame = reader.frame(1)
    fg = frame.part > 0
    assert fg.any() and frame.pointmap.shape == (*frame.part.shape, 3)
    np.testing.assert_allclose(frame.depth[fg], frame.pointmap[..., 2][fg], rtol=1e-3, atol=1e-3)
    assert np.isnan(frame.pointmap[~fg]).all()
