"""The result store's vocabulary (tasks, part classes, frame statuses) and :class:`StoreSpec`.

Public names are re-exported by :mod:`storage.schema`; import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final, Literal, cast

import numpy as np

from storage.errors import SchemaMismatchError

SCHEMA_VERSION: Final = 2
SUPPORTED_SCHEMA_VERSIONS: Final = (1, 2)
"""Versions this code reads: v1 stores are frame-map stores whose spec has no ``patch_size``."""
Task = Literal["pose", "seg", "depth", "normal", "pointmap"]
TASKS: Final[tuple[Task, ...]] = ("pose", "seg", "depth", "normal", "pointmap")
DENSE_TASKS: Final[tuple[Task, ...]] = ("seg", "depth", "normal", "pointmap")
KEYPOINT_COUNTS: Final = (17, 133, 308)
NUM_PART_CLASSES: Final = 28
"""Body-part classes of Sapiens (v1) segmentation, the default ``StoreSpec.num_classes``."""
PART_CLASS_COUNTS: Final = (28, 29)
"""Allowed ``StoreSpec.num_classes``: 28 (Sapiens) or 29 (Sapiens2, "Eyeglass" at index 2)."""
MAX_PART_CLASSES: Final = max(PART_CLASS_COUNTS)
"""Labels every frame may carry (0 .. 28); the store checks its own ``num_classes``."""
NORMAL_SCALE: Final = 127
"""Normals are stored as ``round(n * 127)`` in int8; readers divide by 127."""
PIXEL_CHUNK: Final = 2**18
"""Pixels per chunk of the per-person pixel arrays (512 KiB of float16 depth)."""
PERSON_CHUNK_ROWS: Final = 64
"""Inner chunk length along the person axis of the pose arrays."""
MAX_PERSON_SLOTS: Final = 65535
DEFAULT_MAX_PERSONS: Final = 128
"""Person rows a store reserves per frame unless its spec says otherwise."""

FrameStatus = Literal["ok", "corrupt", "skipped"]
"""What became of a frame the job selected: ``ok`` (analysed), ``corrupt`` (its packet failed
to decode or the decoder flagged it: no pixels, no persons, empty maps) or ``skipped`` (decoded
but left out: more detections than the store holds per frame)."""
FRAME_STATUS: Final[dict[FrameStatus, int]] = {"ok": 1, "corrupt": 2, "skipped": 3}
"""On-disk code of each status in ``frames/status``; 0 (the fill) is a frame never written."""


def output_size(source_height: int, source_width: int, downscale: float = 1.0) -> tuple[int, int]:
    """Return the output map size (H, W) for a source size and a downscale factor.

    Args:
        source_height: Source video height in pixels.
        source_width: Source video width in pixels.
        downscale: Factor >= 1; output = round(source / downscale), at least 1 pixel.

    Returns:
        The output (height, width).

    Raises:
        SchemaMismatchError: If a size is not positive or ``downscale`` < 1.

    Example:
        >>> output_size(720, 1280, 2.5)
        (288, 512)
    """
    if source_height < 1 or source_width < 1:
        msg = f"source size must be positive, got {source_height}x{source_width}"
        raise SchemaMismatchError(msg)
    if not downscale >= 1.0:
        msg = f"downscale must be >= 1 (1 = source resolution), got {downscale}"
        raise SchemaMismatchError(msg)
    return max(1, round(source_height / downscale)), max(1, round(source_width / downscale))


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    """What one job's result store holds; fixed when the store is created.

    Attributes:
        tasks: Enabled tasks, a non-empty subset of ``TASKS`` kept in canonical order.
        num_keypoints: Keypoints per person K (308 Sapiens whole body, 133 COCO-WholeBody, 17).
        height: Output map height H (source height unless downscaled).
        width: Output map width W.
        source_height: Source video height; keypoints and boxes stay in source pixels.
        source_width: Source video width.
        frames_per_shard: Frames per block B: the unit of commit, shard and writer ownership.
        max_persons_per_frame: Person rows reserved per frame; a block owns B times this many.
        patch_size: (Hs, Ws) largest per-person patch of the dense results (seg, depth,
            normal, pointmap), which are then stored per person (the producer sets it to the
            model's crop size, e.g. (1024, 768)); None (default): dense results are stored as
            frame maps of the output size.
        num_classes: Body-part classes of the seg labels: 28 (Sapiens, the default) or 29
            (Sapiens2, which inserts "Eyeglass" at index 2); labels are 0 .. num_classes - 1.
    """

    tasks: tuple[Task, ...] = TASKS
    num_keypoints: int = 308
    height: int
    width: int
    source_height: int
    source_width: int
    frames_per_shard: int = 8
    max_persons_per_frame: int = DEFAULT_MAX_PERSONS
    patch_size: tuple[int, int] | None = None
    num_classes: int = NUM_PART_CLASSES

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks or len(set(self.tasks)) != len(self.tasks):
            msg = f"tasks: expected a non-empty, duplicate-free subset of {TASKS}, got {self.tasks}"
            raise SchemaMismatchError(msg)
        object.__setattr__(self, "tasks", tuple(t for t in TASKS if t in self.tasks))
        if self.num_keypoints not in KEYPOINT_COUNTS:
            msg = f"num_keypoints: expected one of {KEYPOINT_COUNTS}, got {self.num_keypoints}"
            raise SchemaMismatchError(msg)
        self._check_sizes()
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", _check_patch_size(self.patch_size))
        if isinstance(self.num_classes, bool) or self.num_classes not in PART_CLASS_COUNTS:
            msg = f"num_classes: expected one of {PART_CLASS_COUNTS}, got {self.num_classes!r}"
            raise SchemaMismatchError(msg)

    def _check_sizes(self) -> None:
        for name in ("height", "width", "source_height", "source_width"):
            if int(getattr(self, name)) < 1:
                msg = f"{name}: expected a positive pixel count, got {getattr(self, name)}"
                raise SchemaMismatchError(msg)
        if self.height > self.source_height or self.width > self.source_width:
            msg = (
                f"output size {self.height}x{self.width} is larger than the source "
                f"{self.source_height}x{self.source_width}; only downscaling is supported"
            )
            raise SchemaMismatchError(msg)
        if not 1 <= self.frames_per_shard <= 256:
            msg = f"frames_per_shard: expected 1..256, got {self.frames_per_shard}"
            raise SchemaMismatchError(msg)
        if not 1 <= self.max_persons_per_frame <= MAX_PERSON_SLOTS:
            msg = (
                f"max_persons_per_frame: expected 1..{MAX_PERSON_SLOTS}, "
                f"got {self.max_persons_per_frame}"
            )
            raise SchemaMismatchError(msg)

    @classmethod
    def for_source(
        cls,
        source_height: int,
        source_width: int,
        *,
        tasks: tuple[Task, ...] = TASKS,
        downscale: float = 1.0,
        num_keypoints: int = 308,
        frames_per_shard: int = 8,
        max_persons_per_frame: int = DEFAULT_MAX_PERSONS,
        patch_size: tuple[int, int] | None = None,
        num_classes: int = NUM_PART_CLASSES,
    ) -> StoreSpec:
        """Build a spec whose output size is the source size divided by ``downscale``."""
        height, width = output_size(source_height, source_width, downscale)
        return cls(
            tasks=tasks,
            num_keypoints=num_keypoints,
            height=height,
            width=width,
            source_height=source_height,
            source_width=source_width,
            frames_per_shard=frames_per_shard,
            max_persons_per_frame=max_persons_per_frame,
            patch_size=patch_size,
            num_classes=num_classes,
        )

    @property
    def per_person(self) -> bool:
        """Whether dense results are stored per person (``patch_size`` set, a dense task on)."""
        return self.patch_size is not None and any(t in DENSE_TASKS for t in self.tasks)

    @property
    def person_rows_per_block(self) -> int:
        """Rows of the person axis owned by one block of frames."""
        return self.frames_per_shard * self.max_persons_per_frame

    @property
    def pixels_per_block(self) -> int:
        """Pixels of each per-person pixel array owned by one block: room for every person
        row of the block at the full ``patch_size``, in whole chunks (0 without one)."""
        if self.patch_size is None:
            return 0
        need = self.person_rows_per_block * self.patch_size[0] * self.patch_size[1]
        return -(-need // PIXEL_CHUNK) * PIXEL_CHUNK

    def has(self, task: Task) -> bool:
        """Return whether ``task`` is enabled."""
        return task in self.tasks

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_dict` turns back into an equal spec.

        ``num_classes`` is left out when it is the default 28, so a store that uses none of
        the Sapiens2 additions records exactly the layout that older v2 code wrote and reads.
        """
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tasks"] = list(self.tasks)
        out["patch_size"] = None if self.patch_size is None else list(self.patch_size)
        if self.num_classes == NUM_PART_CLASSES:
            del out["num_classes"]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StoreSpec:
        """Build a spec from :meth:`to_dict` output; unknown keys are rejected.

        A missing ``num_classes`` (older specs) means 28; a missing ``patch_size`` (v1) None.

        Raises:
            SchemaMismatchError: On unknown keys or invalid values.
        """
        valid = {f.name for f in fields(cls)}
        if unknown := set(raw) - valid:
            msg = f"unknown StoreSpec key(s) {sorted(unknown)}; valid keys: {sorted(valid)}"
            raise SchemaMismatchError(msg)
        values = dict(raw)
        if "tasks" in values:
            values["tasks"] = tuple(cast("list[Task]", values["tasks"]))
        try:
            return cls(**values)
        except TypeError as e:
            msg = f"invalid StoreSpec {dict(raw)!r}: {e}"
            raise SchemaMismatchError(msg) from e


def _check_patch_size(value: Any) -> tuple[int, int]:
    """Return ``value`` as an (Hs, Ws) tuple of positive ints, or raise."""
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value
        )
    )
    if not ok:
        msg = f"patch_size: expected None or (height, width), two ints >= 1, got {value!r}"
        raise SchemaMismatchError(msg)
    return int(value[0]), int(value[1])
