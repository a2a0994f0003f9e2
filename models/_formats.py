"""Readers for the checkpoint file formats Sapiens is released in.

Each reader returns a flat ``{official key: tensor}`` dict; key mapping happens elsewhere
(``models.checkpoint``). No reader executes anything from the file: ``.pth`` pickles go through
the allow-list unpickler (``models._unpickle``), TorchScript and ``torch.export`` archives are read
as data (their code is never loaded or run), safetensors holds no code at all.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from models._archive import ZipRecords, map_file, module_tensors, read_torch_save, read_torch_zip
from models._pickle_checks import AllocationBudget
from models._pt2 import read_export_state
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
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor) or not isinstance(k, str)]
    if bad:
        msg = (
            f"{path}: entries that are not tensors: {bad[:10]!r:.300} (expected a flat state dict)"
        )
        raise CheckpointError(msg)
    return dict(obj)


def _open(path: Path) -> tuple[memoryview, AllocationBudget]:
    buf = map_file(path)
    return buf, AllocationBudget.for_file_size(len(buf))


def _read_pth(path: Path) -> dict[str, Tensor]:
    return _unwrap(read_torch_save(*_open(path)), path)


def _read_torchscript(path: Path) -> dict[str, Tensor]:
    root = read_torch_zip(ZipRecords(*_open(path)), script=True)
    return _unwrap(module_tensors(root), path)


def _read_export(path: Path) -> dict[str, Tensor]:
    return _unwrap(read_export_state(ZipRecords(*_open(path))), path)


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


#: What a malformed file can raise while being read; all become a CheckpointError.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,  # includes UnicodeDecodeError and json's JSONDecodeError
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
    ImportError,
    RuntimeError,  # includes RecursionError and torch's size checks
    MemoryError,
    OverflowError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
    OSError,
)
_KIND = {
    "pth": "torch checkpoint",
    "torchscript": "TorchScript archive",
    "export": "torch.export archive",
    "safetensors": "safetensors file",
}


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Read any supported checkpoint file into ``({official key: tensor}, format)``.

    ``.pth`` files go through the restricted unpickler (``models._unpickle``): OpenMMLab objects
    in ``meta`` load as inert placeholders, anything that would run code is refused. TorchScript
    and ``torch.export`` archives are read as data: only their pickled state and weight records.

    Raises:
        CheckpointNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file names a callable outside the allow-list.
        CheckpointError: any other reason the file cannot be read (one line, with the cause).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist or is not a file")
    fmt = "pth"
    try:
        fmt = detect_format(path)
        return _READERS[fmt](path), fmt
    except CheckpointError as e:
        if str(path) in str(e):
            raise
        raise type(e)(f"{path}: {e}") from e
    except _READ_ERRORS as e:
        cause = " ".join(f"{type(e).__name__}: {e}".split()).rstrip(":")[:300]
        raise CheckpointError(f"{path}: not a readable {_KIND[fmt]} ({cause})") from e
