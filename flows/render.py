"""Rendering a result store over its source video: skeletons, part colours, depth, normals.

Each output frame is a panel ``[frame + skeletons | parts over frame | depth | normals |
pointmap depth]`` (each present when the store holds the task; parts in the palette of the
store's class set, Sapiens' 28 or Sapiens2's 29 classes; the pointmap shown by its metric z),
written as an H.264 mp4 (``.mp4``) or, for one frame, a PNG (``.png``). A store whose
provenance says any of its models had random weights (``reader.models[*].random_weights``)
gets a banner across the top of every frame: "random weights: not a prediction".

A store is data from elsewhere: the network URL it names as its source is never fetched unless
the caller passes it again as ``source``; a local path it names is opened (the decoder checks
that it is a readable regular file).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from flows.visualize import (
    RANDOM_WEIGHTS_BANNER,
    banner,
    colorize_depth,
    colorize_normals,
    colorize_parts,
    draw_pose,
    panel,
)
from media import VideoWriter, read_frames
from media.errors import SourceNotFoundError
from models.metadata import keypoint_set, seg_classes
from storage import ResultReader, open_result

__all__ = ["random_weights", "render"]

logger = logging.getLogger(__name__)

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _source_frames(reader: ResultReader, source: str) -> Iterator[tuple[int, np.ndarray]]:
    """(store index, RGB source frame) for every committed frame, in order."""
    wanted = {int(s): i for i, s in enumerate(reader.read_frames().source_index)}
    if not wanted:
        return
    last = max(wanted)
    for index, rgb in read_frames(source):
        if index in wanted:
            yield wanted[index], rgb
        if index >= last:
            return


def _resize(img: np.ndarray, hw: tuple[int, int], nearest: bool) -> np.ndarray:
    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), mode))


def _depth_tile(depth: np.ndarray, fg: np.ndarray | None, hw: tuple[int, int]) -> np.ndarray:
    mask = None if fg is None else _resize(fg.astype(np.uint8), depth.shape, True) > 0
    return _resize(colorize_depth(depth, mask), hw, nearest=False)


def random_weights(reader: ResultReader) -> bool:
    """Whether the store's provenance names a model part with random weights."""
    return any(m.random_weights for m in reader.models)


def _tile(
    reader: ResultReader, index: int, frame: np.ndarray, height: int, *, random: bool
) -> np.ndarray:
    data = reader.frame(index)
    classes = seg_classes("sapiens2" if reader.spec.num_classes == 29 else "sapiens")
    p = data.persons
    hw = frame.shape[:2]
    tiles = [frame]
    if p.keypoints_xy is not None and p.keypoint_score is not None:
        kset = keypoint_set(p.keypoints_xy.shape[1])
        tiles[0] = draw_pose(frame, p.keypoints_xy, p.keypoint_score, kset)
    fg = None
    if data.part is not None:
        labels = _resize(np.asarray(data.part), hw, nearest=True)
        fg = labels > 0
        tiles.append(colorize_parts(labels, alpha_on=frame, classes=classes))
    if data.depth is not None:
        tiles.append(_depth_tile(np.asarray(data.depth, dtype=np.float32), fg, hw))
    if data.normal is not None:
        tiles.append(_resize(colorize_normals(np.asarray(data.normal)), hw, nearest=False))
    if data.pointmap is not None:
        tiles.append(_depth_tile(np.asarray(data.pointmap[..., 2], dtype=np.float32), fg, hw))
    out = panel(tiles, height=height)
    if random:
        out = banner(out, RANDOM_WEIGHTS_BANNER)
    return out[: out.shape[0] // 2 * 2, : out.shape[1] // 2 * 2]  # even sides for yuv420p


def render(
    store: str | Path,
    out: str | Path,
    *,
    source: str | None = None,
    height: int = 360,
    frame: int | None = None,
    fps: float | None = None,
) -> Path:
    """Render ``store`` to ``out`` (``.mp4``, or ``.png`` of one ``frame``; default frame 0).

    Args:
        store: result store path or URL.
        out: output file.
        source: the source video, path or URL. Default: the source recorded in the store if it
            is a local path or ``file://`` URL; a network URL recorded there is not fetched,
            and rendering fails (nothing is written) until it is passed here explicitly.
        height: panel height in pixels.
        frame: store frame to render as PNG.
        fps: mp4 frame rate (default: the source's, divided by the sampling stride).

    Raises:
        SourceNotFoundError: ``source`` is None and the store records a network URL.
    """
    reader = open_result(store)
    attrs = reader.attrs
    random = random_weights(reader)
    source = source or _recorded_source(store, attrs)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        target = frame or 0
        for index, rgb in _source_frames(reader, source):
            if index == target:
                Image.fromarray(_tile(reader, index, rgb, height, random=random)).save(out)
                return out
        raise ValueError(f"{store}: frame {target} is not committed")
    with VideoWriter(out, fps=fps or _rate(reader, attrs)) as sink:
        for index, rgb in _source_frames(reader, source):
            sink.write(_tile(reader, index, rgb, height, random=random))
    return out


def _recorded_source(store: str | Path, attrs: dict) -> str:
    """The store's recorded source, if it is local; a network URL is left to the caller."""
    uri = str(attrs["source"]["uri"])
    match = _URL.match(uri)
    if match and match.group(1).lower() != "file":
        shown = re.sub(r"^([^:]+://)[^/@]*@", r"\1***@", uri)  # no credentials in messages
        msg = (
            f"store {str(store)!r} names a network source {shown!r}, which render does not "
            "fetch on its own; pass the video (that URL or a local copy) with --source"
        )
        raise SourceNotFoundError(msg)
    return uri


def _rate(reader: ResultReader, attrs: dict) -> float:
    times = reader.read_frames().time_s
    if len(times) > 1 and times[-1] > times[0]:
        return float((len(times) - 1) / (times[-1] - times[0]))
    return float(attrs["source"].get("fps") or 25.0)
