"""Which model made a store's results: one :class:`ModelProvenance` per checkpointed part.

A store records, in its ``models`` attribute, one entry per checkpoint the results came from:
the model's name, the task it serves, the SHA-256 of the checkpoint file (None for random
weights), whether the weights were random, and where the checkpoint was read from. The writer
refuses an entry that is not of this shape, and the reader returns entries of this type, so
provenance can be trusted (and compared) without guessing at dict keys.

Example:
    >>> p = ModelProvenance(name="sapiens-0.3b", task="pose", checkpoint_sha256="ab" * 32)
    >>> ModelProvenance.from_dict(p.to_dict()) == p
    True
    >>> ModelProvenance.from_dict({"name": "x", "task": "pose", "random_weights": True})
    Traceback (most recent call last):
    ...
    storage.errors.SchemaMismatchError: model entry lacks keys ['checkpoint_sha256']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from storage.errors import SchemaMismatchError

__all__ = ["ModelProvenance"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("name", "task", "checkpoint_sha256", "random_weights")
_MAX_TEXT = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelProvenance:
    """One checkpointed part of the model that produced a store's results.

    Args:
        name: the model, e.g. ``sapiens-0.3b``.
        task: the part's task or backbone group, e.g. ``pose``.
        checkpoint_sha256: lower-case hex SHA-256 of the checkpoint file; None for random
            weights.
        random_weights: the weights were random (a smoke or test model, not a prediction).
        source: where the checkpoint was read from (path or hub name), or None.
        licence: the licence of the weights and a one-line summary of its use restrictions
            (e.g. ``Sapiens2 License: prohibits surveillance, ...``), or None (older stores).
    """

    name: str
    task: str
    checkpoint_sha256: str | None = None
    random_weights: bool = False
    source: str | None = None
    licence: str | None = None

    def __post_init__(self) -> None:
        for key in ("name", "task"):
            _check_text(key, getattr(self, key), optional=False)
        _check_text("source", self.source, optional=True)
        _check_text("licence", self.licence, optional=True)
        sha = self.checkpoint_sha256
        if sha is not None and (not isinstance(sha, str) or not _SHA256.fullmatch(sha)):
            msg = f"model entry checkpoint_sha256: expected 64 lower-case hex digits, got {sha!r}"
            raise SchemaMismatchError(msg)
        if not isinstance(self.random_weights, bool):
            msg = f"model entry random_weights: expected a bool, got {self.random_weights!r}"
            raise SchemaMismatchError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as stored; ``ModelProvenance.from_dict(p.to_dict()) == p``. An entry
        without a licence is stored without the key, as before it existed."""
        out = asdict(self)
        if out["licence"] is None:
            del out["licence"]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelProvenance:
        """Build from a stored entry, refusing missing or unknown keys.

        Raises:
            SchemaMismatchError: the entry is not a mapping of the expected keys and values.
        """
        if not isinstance(raw, Mapping):
            msg = f"model entry: expected a mapping, got {type(raw).__name__}"
            raise SchemaMismatchError(msg)
        if missing := [k for k in _REQUIRED if k not in raw]:
            msg = f"model entry lacks keys {missing}"
            raise SchemaMismatchError(msg)
        if unknown := sorted(set(raw) - {f.name for f in fields(cls)}):
            msg = f"model entry has unknown keys {unknown[:10]}"
            raise SchemaMismatchError(msg)
        return cls(**raw)


def _check_text(key: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT or "\n" in value:
        msg = f"model entry {key}: expected a one-line string of at most {_MAX_TEXT} characters"
        raise SchemaMismatchError(msg + f", got {value!r}"[:200])
