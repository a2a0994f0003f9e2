"""Read-side data containers returned by :class:`storage.reader.ResultReader`.

All arrays are decoded numpy arrays (normals as float32 unit vectors, depth and metric pointmap
xyz as float32); person arrays are aligned on axis 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from storage._encode import decode_normal, decode_scaled
from storage.errors import SchemaMismatchError
from storage.frame import FrameResult
from storage.schema import FRAME_STATUS, FrameStatus

__all__ = ["FrameData", "FrameTable", "PersonPatches", "Persons", "StoreSummary", "Track"]

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameTable:
    """Per-frame scalars of frames ``start .. start+len-1``.

    Attributes:
        start: Index of the first frame.
        source_index: (n,) index in the source video.
        pts: (n,) presentation timestamps (int64 min where unknown).
        time_s: (n,) presentation times in seconds.
        person_offset: (n,) first physical person row of each frame.
        person_count: (n,) persons of each frame.
        status: (n,) uint8 code of what became of each frame (``storage.FRAME_STATUS``: 1 ok,
            2 corrupt, 3 skipped); see :meth:`statuses`.
    """

    start: int
    source_index: Array
    pts: Array
    time_s: Array
    person_offset: Array
    person_count: Array
    status: Array

    def __len__(self) -> int:
        return int(self.source_index.shape[0])

    @property
    def frames(self) -> Array:
        """(n,) frame indices."""
        return np.arange(self.start, self.start + len(self), dtype=np.int64)

    @property
    def ok(self) -> Array:
        """(n,) bool: the frame was analysed (not corrupt, not skipped)."""
        return np.asarray(self.status == FRAME_STATUS["ok"])

    def statuses(self) -> list[FrameStatus]:
        """Each frame's status by name."""
        names = {code: name for name, code in FRAME_STATUS.items()}
        return [names[int(c)] for c in self.status]

    def csr_offsets(self) -> Array:
        """(n+1,) compact CSR offsets: frame j's persons are [off[j], off[j+1]) of a read."""
        return np.concatenate([[0], np.cumsum(self.person_count, dtype=np.int64)])

    def person_rows(self) -> Array:
        """Physical person rows of all frames, in frame order."""
        parts = [
            np.arange(o, o + c, dtype=np.int64)
            for o, c in zip(self.person_offset, self.person_count, strict=True)
            if c
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class Persons:
    """Persons aligned on axis 0 (of one frame, or of a range of frames).

    Attributes:
        frame: (P,) frame index of each person.
        track_id: (P,) track ids.
        box_xyxy: (P, 4) boxes in source pixels.
        score: (P,) detection scores.
        keypoints_xy: (P, K, 2) keypoints in source pixels, or None without pose.
        keypoint_score: (P, K) keypoint scores (float32), or None without pose.
    """

    frame: Array
    track_id: Array
    box_xyxy: Array
    score: Array
    keypoints_xy: Array | None = None
    keypoint_score: Array | None = None

    def __len__(self) -> int:
        return int(self.track_id.shape[0])


@dataclass(frozen=True, slots=True, kw_only=True)
class PersonPatches:
    """Each person's own dense results (a per-person store), aligned with :class:`Persons`.

    Patch k covers the source-pixel rectangle ``patch_box[k]``; its pixel (i, j) of a patch of
    shape (h, w) is centred at source x = x0 - 0.5 + (j + 0.5) * (x1 - x0) / w (y likewise).
    Sizes may differ per task (e.g. seg at half the depth resolution).

    Attributes:
        patch_box: (P, 4) int32 ``x0, y0, x1, y1`` in source pixels (x1, y1 exclusive).
        part_patch: P uint8 (h, w) part labels 0 .. num_classes - 1, or None without seg.
        fg_patch: P uint8 (h, w) foreground probability as round(p * 255), or None without seg.
        depth_patch: P float32 (h, w) relative depth, decoded: the stored float16 patch times
            the person's scale (unlike ``FrameResult.depth_patch``), or None.
        normal_patch: P float32 (h, w, 3) unit normals, decoded and renormalised (unlike
            ``FrameResult.normal_patch``), or None.
        pointmap_patch: P float32 (h, w, 3) metric camera-space x, y, z: the stored raw
            float16 xyz divided by the person's ``pointmap_scale`` (unlike
            ``FrameResult.pointmap_patch``, which is raw), or None without pointmap.
        pointmap_scale: (P,) float32 scale s the model predicted for each person's crop
            (metric = raw / s), present iff ``pointmap_patch`` is.
    """

    patch_box: Array
    part_patch: tuple[Array, ...] | None = None
    fg_patch: tuple[Array, ...] | None = None
    depth_patch: tuple[Array, ...] | None = None
    normal_patch: tuple[Array, ...] | None = None
    pointmap_patch: tuple[Array, ...] | None = None
    pointmap_scale: Array | None = None

    def __len__(self) -> int:
        return int(self.patch_box.shape[0])

    @classmethod
    def from_frame_result(cls, r: FrameResult) -> PersonPatches:
        """Decode the per-person fields of ``r`` as a reader would return them.

        Raises:
            SchemaMismatchError: If ``r`` has no per-person fields (a ValueError).
        """
        if r.patch_box is None:
            msg = f"FrameResult(index={r.index}) has no per-person patches (patch_box is None)"
            raise SchemaMismatchError(msg)
        depth = None
        if r.depth_patch is not None and r.depth_scale is not None:
            depth = decode_scaled(r.depth_patch, r.depth_scale, divide=False)
        pointmap = scale = None
        if r.pointmap_patch is not None and r.pointmap_scale is not None:
            scale = r.pointmap_scale.astype(np.float32)
            pointmap = decode_scaled(r.pointmap_patch, scale, divide=True)
        return cls(
            patch_box=r.patch_box.astype(np.int32),
            part_patch=r.part_patch,
            fg_patch=r.fg_patch,
            depth_patch=depth,
            normal_patch=None
            if r.normal_patch is None
            else tuple(map(decode_normal, r.normal_patch)),
            pointmap_patch=pointmap,
            pointmap_scale=scale,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameData:
    """Everything stored for one frame; map fields are None for disabled tasks.

    Attributes:
        index: Frame index in the store.
        source_index: Index in the source video.
        pts: Presentation timestamp, or None if unknown.
        time_s: Presentation time in seconds (NaN: unknown, for a corrupt frame).
        status: ``ok``, ``corrupt`` or ``skipped`` (see ``storage.FrameStatus``).
        persons: The frame's persons; person_map value k refers to ``persons`` row k-1.
        part: (H, W) uint8 part labels.
        person_map: (H, W) uint16 owning person (0 = none).
        depth: (H, W) float32 relative depth, NaN off-person.
        normal: (H, W, 3) float32 unit normals, 0 off-person.
        pointmap: (H, W, 3) float32 metric camera-space x, y, z, NaN off-person.
        patches: Each person's own dense results in a per-person store (schema v2), aligned
            with ``persons``; None in a frame-map store. The maps above are composed from them
            (see :func:`storage.compose_frame_maps`).
    """

    index: int
    source_index: int
    pts: int | None
    time_s: float
    persons: Persons
    status: FrameStatus = "ok"
    part: Array | None = None
    person_map: Array | None = None
    depth: Array | None = None
    normal: Array | None = None
    pointmap: Array | None = None
    patches: PersonPatches | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Track:
    """One track across frames, ordered by frame.

    Attributes:
        track_id: The track id.
        persons: The track's person rows (``persons.frame`` says where each one is).
    """

    track_id: int
    persons: Persons

    @property
    def frames(self) -> Array:
        """(n,) frame indices where the track appears."""
        return self.persons.frame


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSummary:
    """A CLI-friendly overview of a store (see :meth:`as_dict`).

    Attributes:
        uri: Where the store is.
        job_id: The job's id, if recorded.
        status: ``running``, ``complete`` or ``failed``.
        frames: Committed frames.
        persons: Person detections in committed frames.
        tracks: Distinct track ids in committed frames.
        tasks: Enabled tasks.
        output_size: (H, W) of the maps.
        source_size: (H, W) of the source video.
        num_keypoints: Keypoints per person.
        duration_s: time_s of the last frame minus the first, 0 if fewer than 2 frames.
    """

    uri: str
    job_id: str | None
    status: str
    frames: int
    persons: int
    tracks: int
    tasks: tuple[str, ...]
    output_size: tuple[int, int]
    source_size: tuple[int, int]
    num_keypoints: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "uri": self.uri,
            "job_id": self.job_id,
            "status": self.status,
            "frames": self.frames,
            "persons": self.persons,
            "tracks": self.tracks,
            "tasks": list(self.tasks),
            "output_size": list(self.output_size),
            "source_size": list(self.source_size),
            "num_keypoints": self.num_keypoints,
            "duration_s": self.duration_s,
        }
