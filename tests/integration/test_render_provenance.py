"""``render`` says so on the picture when the store's provenance names random weights: a red
banner with white words across the top, read here from the pixels."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from flows.render import render
from flows.visualize import BANNER_RGB, banner_height
from storage import FrameResult, ModelProvenance, StoreSpec, Writer
from tests.inputs.boxclip import write_clip

W, H = 320, 240


def _store(path: Path, video: Path, *, random: bool) -> Path:
    """A finished pose store of one frame without persons over ``video``, whose provenance
    says the weights were random or names a checkpoint."""
    spec = StoreSpec(tasks=("pose",), num_keypoints=17, height=H, width=W, source_height=H,
                     source_width=W)  # fmt: skip
    model = ModelProvenance(
        name="sapiens-tiny" if random else "sapiens-0.3b",
        task="pose",
        checkpoint_sha256=None if random else "ab" * 32,
        random_weights=random,
    )
    writer = Writer.create(
        path, spec, job={"job_id": "render"}, source={"uri": str(video)}, models=[model]
    )
    writer.add(
        FrameResult(
            index=0,
            source_index=0,
            pts=0,
            time_s=0.0,
            track_id=np.zeros(0, np.int64),
            box_xyxy=np.zeros((0, 4), np.float32),
            score=np.zeros(0, np.float32),
            keypoints_xy=np.zeros((0, 17, 2), np.float32),
            keypoint_score=np.zeros((0, 17), np.float32),
        )
    )
    writer.finalize()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("render") / "clip.mp4", width=W, height=H, n=1)


def _band(image: np.ndarray) -> np.ndarray:
    return image[: banner_height(image.shape[0])]


def test_a_random_weight_store_renders_with_the_banner(video: Path, tmp_path: Path) -> None:
    shown = np.asarray(Image.open(render(_store(tmp_path / "r.zarr", video, random=True),
                                         tmp_path / "r.png", height=H)))  # fmt: skip
    plain = np.asarray(Image.open(render(_store(tmp_path / "p.zarr", video, random=False),
                                         tmp_path / "p.png", height=H)))  # fmt: skip
    assert shown.shape == plain.shape == (H, W, 3)
    red = np.all(_band(shown) == np.array(BANNER_RGB, np.uint8), axis=-1)
    white = np.all(_band(shown) == 255, axis=-1)
    assert red.mean() > 0.5 and white.sum() > 50  # a red band with white words on it
    assert not np.all(_band(plain) == np.array(BANNER_RGB, np.uint8), axis=-1).any()
    assert (_band(shown) != _band(plain)).any(axis=-1).mean() > 0.5  # the band covers the frame
    np.testing.assert_array_equal(shown[len(red) :], plain[len(red) :])  # the rest alike


def test_the_banner_is_in_every_frame_of_an_mp4(video: Path, tmp_path: Path) -> None:
    out = render(_store(tmp_path / "r.zarr", video, random=True), tmp_path / "r.mp4", height=H)
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    band = _band(frame).reshape(-1, 3).astype(np.float64)
    r, g, b = np.median(band, axis=0)
    assert r > 150 and g < 60 and b < 60  # mostly red after H.264
