"""Per-person dense results: reduced in the Sapiens actor, stored per person, composed on read.

The reference is the frame-map compositor the pipeline used before results became per-person
(``models._persons.composite_persons``, run on the same raw head outputs): composed frame maps
read back from a real store must equal it wherever a person's box lies, and every person's own
patches must be readable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from actors.infer import FrameMeta, frame_records
from actors.messages import PersonBatch
from models._persons import composite_persons
from models.analyze import decode_outputs
from models.preprocess import crop_persons
from storage import StoreSpec, Writer, open_result

CROP = (256, 192)  # finer than the frame over every crop: patches at box resolution
FRAME = (120, 160)
BOXES = [[20.0, 10.0, 70.0, 100.0], [45.5, 20.0, 95.0, 110.0], [60.0, 5.0, 120.0, 90.0]]
BOXES += [[10.0, 30.0, 50.0, 115.0]]
FRAME_OF = [0, 0, 0, 1]
SCORES = [0.9, 0.8, 0.85, 0.7]


def _smooth(n: int, c: int, hw: tuple[int, int], seed: int, scale: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, c, 4, 3, generator=g) * scale
    return F.interpolate(coarse, size=hw, mode="bilinear", align_corners=False)


def _outputs(center: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Smooth head outputs: each person's seg has a dominant part of its own and a varying
    background, with foreground probabilities mostly 0.25-0.95 (so that 1/255 steps rarely
    tie), and is pure background where its crop sees pixels outside its box (there the frame
    map compositor, which pastes whole crops, and per-person patches, which cover the box,
    would differ by design)."""
    n = len(BOXES)
    seg = _smooth(n, 28, CROP, 0, 1.0)
    seg[:, 0] = 3.5 + 1.5 * _smooth(n, 1, CROP, 3, 1.0)[:, 0]
    for k in range(n):
        seg[k, 5 + k] += 4.0
    # frame pixel seen by each crop pixel (the inverse UDP warp; the map is at crop size)
    v, u = torch.meshgrid(torch.arange(CROP[0]), torch.arange(CROP[1]), indexing="ij")
    for k, box in enumerate(BOXES):
        sw, sh = scale[k].tolist()
        x = u * sw / (CROP[1] - 1) + center[k, 0] - 0.5 * sw
        y = v * sh / (CROP[0] - 1) + center[k, 1] - 0.5 * sh
        outside = (x < box[0]) | (x > box[2]) | (y < box[1]) | (y > box[3])
        seg[k, 0][outside] = 30.0
    return {
        "seg": seg,
        "depth": 4.0 + _smooth(n, 1, CROP, 1, 1.0),
        "normal": _smooth(n, 3, CROP, 2, 1.0),
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    frames = torch.zeros(2, 3, *FRAME)
    index = torch.tensor(FRAME_OF)
    boxes = torch.tensor(BOXES)
    crop = crop_persons(frames, index, boxes, out_size=CROP)
    outputs = _outputs(crop.center, crop.scale)
    res = decode_outputs(
        outputs,
        center=crop.center,
        scale=crop.scale,
        matrix=crop.matrix,
        boxes=boxes,
        frame_size=FRAME,
        crop_size=CROP,
        tasks=("seg", "depth", "normal"),
        num_keypoints=0,
    )
    persons = PersonBatch(
        boxes=boxes.numpy(),
        scores=np.array(SCORES, np.float32),
        frame=np.array(FRAME_OF, np.int64),
        track_id=np.arange(len(BOXES), dtype=np.int64),
    )
    meta = FrameMeta(
        first_index=0,
        source_index=np.arange(2),
        pts=np.arange(2),
        time_s=np.arange(2) / 25.0,
        status=("ok", "ok"),
    )
    path = tmp_path_factory.mktemp("store") / "job.zarr"
    spec = StoreSpec(
        tasks=("seg", "depth", "normal"),
        height=FRAME[0],
        width=FRAME[1],
        source_height=FRAME[0],
        source_width=FRAME[1],
        patch_size=CROP,
    )
    writer = Writer.create(path, spec, job={"job_id": "per-person"})
    for record in frame_records(meta, persons, res):
        writer.add(record)
    writer.finalize()
    reference = composite_persons(
        outputs,
        matrix=crop.matrix,
        frame_index=index,
        scores=torch.tensor(SCORES),
        boxes=boxes,
        n_frames=2,
        frame_size=FRAME,
        crop_size=CROP,
    )
    ref = {
        "person": reference.person,
        "part": reference.part,
        "depth": reference.depth,
        "normal": reference.normal,
    }
    return path, ref


def _in_boxes(frame: int) -> np.ndarray:
    """Pixels whose centre lies in a box of that frame (bounds inclusive)."""
    ys, xs = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    inside = np.zeros(FRAME, bool)
    for box, f in zip(BOXES, FRAME_OF, strict=True):
        if f == frame:
            inside |= (xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3])
    return inside


@pytest.mark.parametrize("frame", [0, 1])
def test_composed_maps_equal_the_frame_map_compositor_inside_the_boxes(
    stored: tuple[Path, dict[str, torch.Tensor]], frame: int
) -> None:
    path, ref = stored
    got = open_result(path).frame(frame)
    inside = _in_boxes(frame)
    want_person = ref["person"][frame].numpy()
    same_owner = (got.person_map.astype(np.int64) == want_person) & inside
    # ownership is decided on foreground probabilities kept to 1/255: only near-ties may flip
    assert same_owner.sum() >= 0.995 * inside.sum(), (same_owner.sum(), inside.sum())
    owned = same_owner & (want_person > 0)
    assert owned.sum() > 0.3 * inside.sum()
    assert (got.part[owned] == ref["part"][frame].numpy()[owned]).mean() >= 0.999
    np.testing.assert_allclose(
        got.depth[owned], ref["depth"][frame].numpy()[owned], rtol=2e-3
    )  # float16 of depth / scale
    want = ref["normal"][frame].numpy()[owned]
    cos = (got.normal[owned] * want).sum(-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > np.cos(np.deg2rad(0.5))  # int8 normals
    # outside every box nobody owns a pixel: patches cover the persons' boxes only
    assert (got.person_map[~inside] == 0).all() and np.isnan(got.depth[~inside]).all()


def test_every_persons_own_patches_are_readable(
    stored: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, _ = stored
    reader = open_result(path)
    data = reader.frame(0)
    patches = data.patches
    assert patches is not None and len(patches.patch_box) == 3
    for k, box in enumerate(BOXES[:3]):
        x0, y0, x1, y1 = patches.patch_box[k].tolist()
        assert (x0, y0) == (int(np.ceil(box[0])), int(np.ceil(box[1])))
        assert (x1, y1) == (int(np.floor(box[2])) + 1, int(np.floor(box[3])) + 1)
        assert patches.part_patch[k].shape == (y1 - y0, x1 - x0)  # box resolution
        assert patches.fg_patch[k].dtype == np.uint8
        assert patches.depth_patch[k].shape == (y1 - y0, x1 - x0)
        assert np.isfinite(patches.depth_patch[k]).all()
        assert patches.normal_patch[k].shape == (y1 - y0, x1 - x0, 3)
