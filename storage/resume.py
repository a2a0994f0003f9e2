"""A job's resume state: where a restarted job picks up, saved with its store.

Example:
    >>> state = ResumeState(frames=8, next_source_index=29, tracker={"next_id": 3})
    >>> ResumeState.from_dict(state.to_dict()) == state
    True
    >>> ResumeState.from_dict({"frames": -1, "next_source_index": 0, "tracker": {}})
    Traceback (most recent call last):
    storage.errors.SchemaMismatchError: resume state: 'frames' must be an int >= 0, got -1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from storage.errors import SchemaMismatchError

__all__ = ["ResumeState"]

_KEYS = ("frames", "next_source_index", "tracker")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeState:
    """Where a restarted job picks up after its first ``frames`` sampled frames.

    Attributes:
        frames: sampled frames analysed (the store index reached); a store saves a state only
            once its watermark reaches this.
        next_source_index: the source frame index to restart decoding at.
        tracker: the tracker's state after frame ``frames - 1`` (plain JSON data).
    """

    frames: int
    next_source_index: int
    tracker: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("frames", "next_source_index"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                msg = f"resume state: {name!r} must be an int >= 0, got {value!r}"
                raise SchemaMismatchError(msg)
        if not isinstance(self.tracker, Mapping):
            msg = f"resume state: 'tracker' must be a mapping, got {type(self.tracker).__name__}"
            raise SchemaMismatchError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what the store's attributes keep)."""
        return {
            "frames": self.frames,
            "next_source_index": self.next_source_index,
            "tracker": dict(self.tracker),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> ResumeState:
        """Read a state from plain data, as kept by a store (which may be hostile).

        Raises:
            SchemaMismatchError: a key is missing or unknown, or a value has the wrong type.
        """
        if not isinstance(raw, Mapping):
            msg = f"resume state must be a mapping, got {type(raw).__name__}"
            raise SchemaMismatchError(msg)
        if set(raw) != set(_KEYS):
            msg = f"resume state keys must be {list(_KEYS)}, got {sorted(map(str, raw))}"
            raise SchemaMismatchError(msg)
        return cls(
            frames=raw["frames"],
            next_source_index=raw["next_source_index"],
            tracker=raw["tracker"],
        )
