"""Readers for the checkpoint file formats Sapiens is released in.

Each reader returns a flat ``{official key: tensor}`` dict; key mapping happens elsewhere
(``models.checkpoint``).
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models import _unpickle
from models.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["detect_format", "read_state_dict", "sha256_of"]


def sha256_of(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def detect_format(path: Path) -> str:
    """``safetensors``, ``torchscript``, ``export`` or ``pth`` (a ``torch.save`` pickle)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any("serialized_exported_program" in n or n.endswith("archive_format") for n in names):
            return "export"
        return "pth"
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30):
        return "safetensors"
    return "pth"


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        msg = f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj)}"
        raise CheckpointError(msg)
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        msg = f"{path}: entries that are not tensors: {bad[:10]} (expected a flat state dict)"
        raise CheckpointError(msg)
    return {str(k): v for k, v in obj.items()}


def _read_pth(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(
            path,
            map_location="cpu",
            weights_only=False,
            pickle_module=_unpickle,
            mmap=zipfile.is_zipfile(path),
        )
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        UnicodeDecodeError,
        zipfile.BadZipFile,
        # allowed names called with the wrong arguments, or naming what does not exist
        AttributeError,
        TypeError,
        KeyError,
        IndexError,
        ImportError,
    ) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e
    return _unwrap(obj, path)


def _read_torchscript(path: Path) -> dict[str, Tensor]:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({e})") from e
    return _unwrap(module.state_dict(), path)


def _read_export(path: Path) -> dict[str, Tensor]:
    try:
        program = torch.export.load(str(path))
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable torch.export archive ({e})") from e
    return _unwrap(dict(program.state_dict), path)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


_READERS = {
    "pth": _read_pth,
    "torchscript": _read_torchscript,
    "export": _read_export,
    "safetensors": _read_safetensors,
}


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Read any supported checkpoint file into ``({official key: tensor}, format)``.

    ``.pth`` files go through the restricted unpickler (``models._unpickle``): OpenMMLab objects
    in ``meta`` load as inert placeholders, anything that would run code is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist or is not a file")
    fmt = detect_format(path)
    return _READERS[fmt](path), fmt
