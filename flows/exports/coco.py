"""COCO keypoint *results* from a store's pose task, and a matching ground-truth-style images file.

Results are a JSON list with one entry per person of every committed frame (the format of the
COCO keypoint challenge and of mmpose's CocoMetric / CocoWholeBodyMetric output)::

    {"image_id": frame, "category_id": 1, "keypoints": [x, y, v, ...], "score": s,
     "bbox": [x, y, w, h], "track_id": t}

* ``image_id`` is the store's frame index; x, y are source pixels; v is the keypoint's score
  (as mmpose writes it; COCOeval ignores a result's v); a keypoint with no finite position is
  written as 0, 0, 0.
* ``score`` is mmpose's ``bbox_keypoint`` instance score: the detection score times the mean of
  the written keypoints' scores above 0.2 (0 when none is).
* By keypoint set: 17 (COCO): ``keypoints`` holds the 17 in COCO order. 133 (COCO-WholeBody):
  split as COCO-WholeBody results are, ``keypoints`` (17 body), ``foot_kpts`` (6),
  ``face_kpts`` (68), ``lefthand_kpts`` (21), ``righthand_kpts`` (21). 308 (Sapiens/Goliath):
  ``keypoints`` holds all 308 in the Goliath order (models.metadata.GOLIATH_308), which no
  COCO tool evaluates as such. ``coco17=True`` writes only the 17 COCO keypoints instead,
  taken by name from the 133 or the 308 (the Goliath set names all 17).

The images file is what ``pycocotools.coco.COCO`` loads so that ``loadRes`` takes the results:
``images`` (one per committed frame: ``id`` = frame, ``width``/``height`` = the source size,
``file_name`` ``<frame:06d>.png``, plus ``source_index`` and ``time_s``), no ``annotations``,
and one ``person`` category whose ``keypoints`` names the entries of ``keypoints`` (with the
1-based ``skeleton`` among them). Both files are written frame by frame.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from flows.exports._common import ExportError, ExportSummary, keypoint_names, num
from models.metadata import keypoint_set
from storage import Persons, ResultReader

__all__ = ["WHOLEBODY_PARTS", "coco_category", "coco_entries", "export_coco"]

WHOLEBODY_PARTS: tuple[tuple[str, int, int], ...] = (
    ("keypoints", 0, 17),
    ("foot_kpts", 17, 23),
    ("face_kpts", 23, 91),
    ("lefthand_kpts", 91, 112),
    ("righthand_kpts", 112, 133),
)
"""COCO-WholeBody result fields and their [start, stop) in the 133-keypoint order."""

KEYPOINT_SCORE_THR = 0.2
"""mmpose CocoMetric's ``keypoint_score_thr``: keypoints that count towards the score."""


def _check_pose(reader: ResultReader) -> None:
    if not reader.spec.has("pose"):
        tasks = list(reader.spec.tasks)
        msg = f"{reader.uri}: COCO keypoint results need the pose task; the store has {tasks}"
        raise ExportError(msg)


def _selection(reader: ResultReader, coco17: bool) -> tuple[np.ndarray, tuple[str, ...]]:
    """Indices of the keypoints to write (in order) and their names."""
    names = keypoint_names(reader)
    if not coco17:
        return np.arange(len(names)), names
    coco = keypoint_set(17).names
    if missing := [n for n in coco if n not in names]:
        msg = f"{reader.uri}: --coco-17: the store's keypoints lack {missing}"
        raise ExportError(msg)
    return np.array([names.index(n) for n in coco]), coco


def coco_category(reader: ResultReader, *, coco17: bool = False) -> dict[str, Any]:
    """The ``person`` category of the images file: the names of ``keypoints``' entries and
    the 1-based skeleton among them."""
    _, names = _selection(reader, coco17)
    k = reader.spec.num_keypoints
    if k == 133 and not coco17:
        names = names[:17]
    links = keypoint_set(len(names)).skeleton
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(names),
        "skeleton": [[a + 1, b + 1] for a, b in links],
    }


def coco_entries(
    reader: ResultReader, index: int, *, coco17: bool = False, persons: Persons | None = None
) -> list[dict[str, Any]]:
    """The result entries of frame ``index`` (its persons, in frame order).

    Raises:
        ExportError: If the store has no pose task.
    """
    _check_pose(reader)
    keep, _ = _selection(reader, coco17)
    persons = reader.persons(index) if persons is None else persons
    assert persons.keypoints_xy is not None and persons.keypoint_score is not None
    split = reader.spec.num_keypoints == 133 and not coco17
    out = []
    for p in range(len(persons)):
        xy = persons.keypoints_xy[p][keep].astype(np.float64)
        s = persons.keypoint_score[p][keep].astype(np.float64)
        ok = np.isfinite(xy).all(axis=1) & np.isfinite(s)
        triples = np.where(ok[:, None], np.column_stack([xy, s]), 0.0)
        valid = s[ok & (s > KEYPOINT_SCORE_THR)]
        x0, y0, x1, y1 = (float(v) for v in persons.box_xyxy[p])
        entry: dict[str, Any] = {"image_id": index, "category_id": 1}
        if split:
            for field, a, b in WHOLEBODY_PARTS:
                entry[field] = triples[a:b].ravel().tolist()
        else:
            entry["keypoints"] = triples.ravel().tolist()
        box_score = num(persons.score[p]) or 0.0
        entry["score"] = box_score * float(valid.mean()) if valid.size else 0.0
        entry["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        entry["track_id"] = int(persons.track_id[p])
        out.append(entry)
    return out


def _image(reader: ResultReader, index: int, source_index: int, time_s: float) -> dict:
    spec = reader.spec
    return {
        "id": index,
        "file_name": f"{index:06d}.png",
        "width": spec.source_width,
        "height": spec.source_height,
        "source_index": source_index,
        "time_s": num(time_s),
    }


class _JsonList:
    """Writes a JSON list one item at a time."""

    def __init__(self, f: TextIO) -> None:
        self._f, self._n = f, 0
        f.write("[")

    def add(self, item: Any) -> None:
        self._f.write(("," if self._n else "") + "\n" + json.dumps(item, allow_nan=False))
        self._n += 1

    def close(self) -> None:
        self._f.write("\n]")


def export_coco(
    reader: ResultReader,
    out: str | Path,
    *,
    images_json: str | Path | None = None,
    coco17: bool = False,
) -> ExportSummary:
    """Write the store's keypoint results to ``out`` (and the images file to ``images_json``),
    frame by frame; see the module docstring for the format.

    Raises:
        ExportError: If the store has no pose task, or ``coco17`` and it lacks a COCO name.
    """
    _check_pose(reader)
    category = coco_category(reader, coco17=coco17)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = persons = 0
    with ExitStack() as stack:
        results = _JsonList(stack.enter_context(out.open("w")))
        images = None
        if images_json is not None:
            Path(images_json).parent.mkdir(parents=True, exist_ok=True)
            images = _ImagesFile(stack.enter_context(Path(images_json).open("w")), category)
        for index, source_index, time_s, people in _frames(reader):
            entries = coco_entries(reader, index, coco17=coco17, persons=people)
            for e in entries:
                results.add(e)
            if images is not None:
                images.add(_image(reader, index, source_index, time_s))
            frames, persons = frames + 1, persons + len(entries)
        results.close()
        if images is not None:
            images.close()
    files = 1 + (images_json is not None)
    return ExportSummary(format="coco", path=str(out), frames=frames, persons=persons, files=files)


class _ImagesFile(_JsonList):
    """The images file: ``info``, then ``images`` one at a time, then no ``annotations`` and
    the one category."""

    def __init__(self, f: TextIO, category: dict[str, Any]) -> None:
        info = {"description": "sapiens-stream frames", "keypoints": category["keypoints"]}
        f.write('{"info": ' + json.dumps(info) + ', "images": ')
        super().__init__(f)
        self._category = category

    def close(self) -> None:
        super().close()
        self._f.write(', "annotations": [], "categories": ' + json.dumps([self._category]))
        self._f.write("}\n")


def _frames(reader: ResultReader) -> Iterator[tuple[int, int, float, Persons]]:
    """Each committed frame's index, source index, time and persons, read a block at a time."""
    table = reader.read_frames()
    step, csr = reader.spec.frames_per_shard, table.csr_offsets()
    for start in range(0, len(table), step):
        stop = min(start + step, len(table))
        people = reader.persons(start, stop)
        for i in range(start, stop):
            a, b = int(csr[i] - csr[start]), int(csr[i + 1] - csr[start])
            yield i, int(table.source_index[i]), float(table.time_s[i]), _rows(people, a, b)


def _rows(p: Persons, a: int, b: int) -> Persons:
    kp, ks = p.keypoints_xy, p.keypoint_score
    return Persons(
        frame=p.frame[a:b],
        track_id=p.track_id[a:b],
        box_xyxy=p.box_xyxy[a:b],
        score=p.score[a:b],
        keypoints_xy=None if kp is None else kp[a:b],
        keypoint_score=None if ks is None else ks[a:b],
    )
