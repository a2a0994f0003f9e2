"""Reading the state dict of a ``torch.export`` archive (``.pt2``) as data.

Two layouts exist. Since PyTorch 2.8 the archive has ``<root>/archive_format`` = ``pt2``, a JSON
weights config (``<root>/data/weights/model_weights_config.json``: for each state-dict key the
record name, dtype, sizes, strides and storage offset) and one raw record per storage. Before
that (the released ``_bfloat16.pt2`` files, PyTorch 2.3) the state dict is a ``torch.save`` file
stored as the record ``serialized_state_dict.pt``. Neither needs the exported program: its graph
is never deserialised or run, and pickled records go through :mod:`models._unpickle`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from models._archive import ZipRecords, read_torch_save
from models.errors import CheckpointError

__all__ = ["read_export_state"]

#: ``torch._export.serde.schema.ScalarType`` codes as written in archives.
SCALAR_TYPES: dict[int, torch.dtype] = {
    1: torch.uint8,
    2: torch.int8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    9: torch.complex32,
    10: torch.complex64,
    11: torch.complex128,
    12: torch.bool,
    13: torch.bfloat16,
    28: torch.uint16,
    29: torch.float8_e4m3fn,
    30: torch.float8_e5m2,
    31: torch.float8_e4m3fnuz,
    32: torch.float8_e5m2fnuz,
    34: torch.uint32,
    35: torch.uint64,
}
_STRIDED_LAYOUT = 7
_MODEL = "model"  # the name torch.export.save gives the program


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, dict) and type(value.get("as_int")) is int:
        return int(value["as_int"])
    raise CheckpointError(f"{what} is {value!r:.80}, expected a concrete integer")


def _strided(records: ZipRecords, name: str, meta: Any) -> Tensor:
    if not isinstance(meta, dict) or meta.get("dtype") not in SCALAR_TYPES:
        raise CheckpointError(f"weight {name!r}: unsupported tensor metadata {meta!r:.120}")
    if meta.get("layout", _STRIDED_LAYOUT) != _STRIDED_LAYOUT:
        raise CheckpointError(f"weight {name!r}: only strided tensors are supported")
    dtype = SCALAR_TYPES[meta["dtype"]]
    sizes = [_as_int(s, f"size of {name!r}") for s in meta.get("sizes", ())]
    strides = [_as_int(s, f"stride of {name!r}") for s in meta.get("strides", ())]
    offset = _as_int(meta.get("storage_offset"), f"storage offset of {name!r}")
    raw = records.storage(name)
    if raw.nbytes() % dtype.itemsize:
        raise CheckpointError(f"weight {name!r}: {raw.nbytes()} bytes are not whole {dtype}")
    flat = torch.empty(0, dtype=dtype).set_(raw, 0, (raw.nbytes() // dtype.itemsize,), (1,))
    # as_strided checks that sizes, strides and offset stay inside the record.
    return torch.as_strided(flat, sizes, strides, offset)


def _state_dict(obj: Any, origin: str) -> dict[str, Tensor]:
    if not isinstance(obj, dict) or not all(
        type(k) is str and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(f"{origin} is not a mapping of names to tensors")
    return obj


def _read_pt2(records: ZipRecords) -> dict[str, Tensor]:
    root = records.root("archive_format")
    weights = f"{root}/data/weights/"
    if f"{weights}{_MODEL}.pt" in records.names:  # transitional layout: one torch.save record
        nested = read_torch_save(records.read(f"{weights}{_MODEL}.pt"), records.budget)
        return _state_dict(nested, f"{weights}{_MODEL}.pt")
    config = json.loads(bytes(records.read(f"{weights}{_MODEL}_weights_config.json")))
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise CheckpointError("the weights config of the archive has no 'config' mapping")
    out: dict[str, Tensor] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict) or type(entry.get("path_name")) is not str:
            raise CheckpointError(f"weights config entry {key!r} names no record")
        name = weights + entry["path_name"]
        if entry.get("use_pickle"):
            value = read_torch_save(records.read(name), records.budget)
            if not isinstance(value, Tensor):
                raise CheckpointError(f"pickled weight {key!r} is a {type(value).__name__}")
            out[key] = value
        else:
            out[key] = _strided(records, name, entry.get("tensor_meta"))
    return out


def read_export_state(records: ZipRecords) -> dict[str, Tensor]:
    """The state dict (parameters and persistent buffers) of a ``torch.export`` archive."""
    if any(n == "archive_format" or n.endswith("/archive_format") for n in records.names):
        return _read_pt2(records)
    names = [n for n in records.names if n.rsplit("/", 1)[-1] == "serialized_state_dict.pt"]
    if len(names) != 1:
        raise CheckpointError("torch.export archive without exactly one serialized_state_dict.pt")
    nested = read_torch_save(records.read(names[0]), records.budget)
    return _state_dict(nested, names[0])
