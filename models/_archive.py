"""Reading the tensors of ``torch.save`` and TorchScript files as data.

Nothing in a file is executed: the pickled parts go through the allow-list unpickler of
:mod:`models._unpickle`, and tensor storages are the raw records of the file, mapped into memory
(copy-on-write) and checked against the sizes the pickle declares. A TorchScript archive is read
the same way: its modules become inert placeholders, and the tensors are found by their attribute
paths (``backbone.layers.0.ln1.weight``), which is what ``module.state_dict()`` would give.
"""

from __future__ import annotations

import io
import mmap
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from models._pickle_checks import AllocationBudget
from models._unpickle import OpaqueObject, StorageType, Unpickler
from models.errors import CheckpointError

__all__ = [
    "ViewReader",
    "ZipRecords",
    "map_file",
    "module_tensors",
    "read_torch_save",
    "read_torch_zip",
]

#: ``torch.save``'s legacy (non-zip) format: magic number and protocol version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
#: Records whose memory is not aligned to this many bytes are copied before use.
ALIGNMENT = 64
#: Deepest module nesting read from a TorchScript archive.
MAX_MODULE_DEPTH = 64


def map_file(path: Path) -> memoryview:
    """The whole file as a writable, copy-on-write memory map (writes never reach the file)."""
    with path.open("rb") as f:
        if f.seek(0, io.SEEK_END) == 0:
            raise CheckpointError(f"{path} is empty")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))


class ViewReader(io.RawIOBase):
    """A seekable, read-only file over a memoryview (no copy of the whole buffer)."""

    def __init__(self, buf: memoryview) -> None:
        super().__init__()
        self._buf = buf
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        if base + offset < 0:  # as a real file does (zipfile relies on it)
            raise OSError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        n = max(0, min(len(out), len(self._buf) - self._pos))
        out[:n] = self._buf[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._buf) if size is None or size < 0 else self._pos + size
        data = bytes(self._buf[self._pos : end])
        self._pos += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = len(self._buf) if size is None or size < 0 else self._pos + size
        end = self._pos
        while end < min(limit, len(self._buf)):
            chunk = bytes(self._buf[end : min(end + 256, limit)])
            cut = chunk.find(b"\n")
            if cut >= 0:
                return self.read(end + cut + 1 - self._pos)
            end += len(chunk)
        return self.read(end - self._pos)


def _byte_tensor(view: memoryview, budget: AllocationBudget) -> Tensor:
    """``view`` as a uint8 tensor sharing its memory; copied (and charged) if misaligned."""
    if len(view) == 0:
        return torch.empty(0, dtype=torch.uint8)
    tensor = torch.frombuffer(view, dtype=torch.uint8)
    if tensor.data_ptr() % ALIGNMENT:
        budget.charge(len(view), "an unaligned record")
        tensor = tensor.clone()
    return tensor


class ZipRecords:
    """The records of a zip archive held in memory; stored records are returned without a copy.

    Args:
        buf: the archive's bytes.
        budget: allowance for records that have to be copied (compressed or misaligned).
    """

    def __init__(self, buf: memoryview, budget: AllocationBudget) -> None:
        self._buf = buf
        self.budget = budget
        self._zip = zipfile.ZipFile(ViewReader(buf))
        self._infos = {info.filename: info for info in self._zip.infolist()}

    @property
    def names(self) -> list[str]:
        return list(self._infos)

    def root(self, leaf: str) -> str:
        """The top folder holding ``leaf`` (torch archives keep every record under one)."""
        roots = [n[: -len(leaf) - 1] for n in self._infos if n.endswith(f"/{leaf}")]
        roots = [r for r in roots if r and "/" not in r]
        if len(roots) != 1:
            msg = f"archive has {len(roots)} top-level '{leaf}' records, expected exactly one"
            raise CheckpointError(msg)
        return roots[0]

    def read(self, name: str) -> memoryview:
        info = self._infos.get(name)
        if info is None:
            raise CheckpointError(f"archive has no record {name!r}")
        if info.compress_type != zipfile.ZIP_STORED:
            self.budget.charge(info.file_size, f"compressed record {name!r}")
            data = bytearray(info.file_size)
            with self._zip.open(info) as f:
                if f.readinto(data) != info.file_size or f.read(1):
                    raise CheckpointError(f"record {name!r} is not {info.file_size} bytes long")
            return memoryview(data)
        header = self._buf[info.header_offset : info.header_offset + 30]
        if len(header) != 30 or bytes(header[:4]) != b"PK\x03\x04":
            raise CheckpointError(f"record {name!r} has no valid local header")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        end = start + info.file_size
        if info.compress_size != info.file_size or end > len(self._buf):
            raise CheckpointError(f"record {name!r} runs past the end of the file")
        return self._buf[start:end]

    def storage(self, name: str) -> torch.UntypedStorage:
        return _byte_tensor(self.read(name), self.budget).untyped_storage()


def _typed(storage: torch.UntypedStorage, dtype: torch.dtype) -> torch.storage.TypedStorage:
    return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)


def _storage_id(pid: Any, length: int) -> tuple[StorageType, str, int]:
    ok = isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage"
    ok = ok and isinstance(pid[1], StorageType) and type(pid[2]) is str and pid[2].isalnum()
    ok = ok and type(pid[4]) is int and pid[4] >= 0
    if not ok:
        raise CheckpointError(f"unexpected persistent id in the pickle: {pid!r:.200}")
    return pid[1], pid[2], pid[4]


def read_torch_zip(records: ZipRecords, *, script: bool = False) -> Any:
    """Unpickle ``<root>/data.pkl`` of a zip ``torch.save`` file or TorchScript archive, with
    each storage taken from the record ``<root>/data/<key>``."""
    root = records.root("data.pkl")
    if f"{root}/byteorder" in records.names:
        order = bytes(records.read(f"{root}/byteorder")).decode("ascii", "replace")
        if order != sys.byteorder:
            raise CheckpointError(f"archive is {order}-endian; this machine is {sys.byteorder}")
    loaded: dict[str, torch.UntypedStorage] = {}

    def persistent_load(pid: Any) -> torch.storage.TypedStorage:
        stype, key, numel = _storage_id(pid, 5)
        if key not in loaded:
            loaded[key] = records.storage(f"{root}/data/{key}")
        storage = loaded[key]
        if storage.nbytes() != numel * stype.dtype.itemsize:
            msg = (
                f"storage {key} holds {storage.nbytes()} bytes, but the pickle declares "
                f"{numel} x {stype.dtype}"
            )
            raise CheckpointError(msg)
        return _typed(storage, stype.dtype)

    pickled = records.read(f"{root}/data.pkl")
    unpickler = Unpickler(
        ViewReader(pickled), budget=records.budget, persistent_load=persistent_load, script=script
    )
    return unpickler.load()


def _load_legacy_storage(
    pid: Any, pending: dict[str, Tensor], left: Callable[[], int], budget: AllocationBudget
) -> torch.storage.TypedStorage:
    stype, key, numel = _storage_id(pid, 6)
    if pid[5] is not None:  # storage views: only old PyTorch versions wrote them
        raise CheckpointError(f"legacy storage view {pid[5]!r:.100} is not supported")
    if key not in pending:
        nbytes = numel * stype.dtype.itemsize
        if nbytes > left():
            raise CheckpointError(f"storage {key} declares {nbytes} bytes, more than the file has")
        budget.charge(nbytes, f"storage {key}")
        pending[key] = torch.empty(nbytes, dtype=torch.uint8)
    return _typed(pending[key].untyped_storage(), stype.dtype)


def _read_legacy(buf: memoryview, budget: AllocationBudget) -> Any:
    """``torch.save(..., _use_new_zipfile_serialization=False)``: pickles, then raw storages."""
    f = ViewReader(buf)
    if Unpickler(f, budget=budget).load() != LEGACY_MAGIC:
        raise CheckpointError("not a torch.save file (no zip archive and no legacy magic number)")
    if Unpickler(f, budget=budget).load() != LEGACY_PROTOCOL:
        raise CheckpointError("legacy torch.save file of an unknown protocol version")
    info = Unpickler(f, budget=budget).load()
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise CheckpointError("legacy torch.save file written on a big-endian machine")
    pending: dict[str, Tensor] = {}
    obj = Unpickler(
        f,
        budget=budget,
        persistent_load=lambda pid: _load_legacy_storage(
            pid, pending, lambda: len(buf) - f.tell(), budget
        ),
    ).load()
    keys = Unpickler(f, budget=budget).load()
    if not isinstance(keys, list) or sorted(keys) != sorted(pending):
        raise CheckpointError("legacy torch.save file lists other storages than its pickle uses")
    pos = f.tell()
    for key in keys:
        data = pending[key]
        head = bytes(buf[pos : pos + 8])
        end = pos + 8 + data.numel()
        if len(head) != 8 or end > len(buf):
            raise CheckpointError(f"legacy torch.save file is truncated in storage {key}")
        if data.numel():
            data.copy_(torch.frombuffer(buf[pos + 8 : end], dtype=torch.uint8))
        pos = end
    return obj


def read_torch_save(buf: memoryview, budget: AllocationBudget) -> Any:
    """The object a ``torch.save`` file holds (zip or legacy format), read as data."""
    if zipfile.is_zipfile(ViewReader(buf)):
        return read_torch_zip(ZipRecords(buf, budget))
    return _read_legacy(buf, budget)


def module_tensors(module: Any) -> dict[str, Tensor]:
    """Every tensor attribute of a TorchScript module tree, by dotted attribute path."""
    out: dict[str, Tensor] = {}
    _collect(module, "", out, 0)
    return out


def _collect(module: Any, prefix: str, out: dict[str, Tensor], depth: int) -> None:
    if not isinstance(module, OpaqueObject):
        raise CheckpointError(f"expected a TorchScript module at {prefix or 'the root'}")
    if depth > MAX_MODULE_DEPTH:
        raise CheckpointError(f"TorchScript modules nest deeper than {MAX_MODULE_DEPTH} levels")
    state = module.state
    if state is None:
        return
    if not isinstance(state, dict):
        msg = (
            f"TorchScript class {module.__module_path__} (at {prefix or 'the root'}) saves its "
            f"state through its own __getstate__ ({type(state).__name__}); its weights cannot be "
            "read without running the archive's code, which this loader never does"
        )
        raise CheckpointError(msg)
    for name, value in state.items():
        if isinstance(value, Tensor):
            out[f"{prefix}{name}"] = value
        elif isinstance(value, OpaqueObject):
            _collect(value, f"{prefix}{name}.", out, depth + 1)
