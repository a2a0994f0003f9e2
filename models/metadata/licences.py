"""The licences the released weights of each model family come under.

Only a summary for provenance and warnings: the licence texts themselves govern. Sapiens
weights are CC-BY-NC-4.0; Sapiens2 weights (and code) come under Meta's custom "Sapiens2
License" (SPEC-sapiens2 §7), whose use restrictions a person has to judge for each use.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LICENCES", "Licence", "licence"]


class Licence(NamedTuple):
    """A licence: its name and a one-line summary of its use restrictions.

    Attributes:
        name: the licence's name (SPDX identifier where one exists).
        summary: what it restricts, in one line.
    """

    name: str
    summary: str


LICENCES: dict[str, Licence] = {
    "sapiens": Licence("CC-BY-NC-4.0", "non-commercial use only"),
    "sapiens2": Licence(
        "Sapiens2 License",
        "prohibits surveillance, biometric processing, identifying or re-identifying "
        "individuals, deepfakes, and inferring sensitive information without consent; "
        "see the licence",
    ),
}
"""Model family -> the licence of its released weights."""


def licence(family: str) -> Licence:
    """The licence of a model family's released weights.

    Args:
        family: ``sapiens`` or ``sapiens2``.

    Raises:
        ValueError: for an unknown family.

    Example:
        >>> licence("sapiens").name
        'CC-BY-NC-4.0'
    """
    if family not in LICENCES:
        raise ValueError(f"unknown model family {family!r}; expected one of {list(LICENCES)}")
    return LICENCES[family]
