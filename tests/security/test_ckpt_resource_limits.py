"""A checkpoint cannot make the loader allocate what the file does not hold, overflow the stack or
crash the process; every failure to read one is a one-line ``CheckpointError``.

The payloads are hand-written pickles (pickle itself never writes them); those that must get past
the header pickles of a ``torch.save`` file are wrapped in its legacy layout.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from models import CheckpointError
from models._formats import read_state_dict

ROOT = Path(__file__).resolve().parents[2]
P2 = b"\x80\x02"
SMALL = 8 << 20  # bytes any of these files may make the loader allocate


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _long(value: int) -> bytes:
    """LONG1: a pickled int of any size."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def _call(module: str, name: str, *args: bytes) -> bytes:
    """``module.name(*args)`` (each arg an already pickled value)."""
    return _global(module, name) + b"(" + b"".join(args) + b"tR"


def _legacy(main: bytes) -> bytes:
    """``main`` (a pickle without PROTO/STOP) as the object of a legacy torch.save file."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    header = b"".join(pickle.dumps(v, 2) for v in (0x1950A86A20F9469CFC6C, 1001, info))
    return header + P2 + main + b"." + pickle.dumps([], 2)


_ARRAY_HEAD = (
    _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray")
    + b"K\x00\x85C\x01b\x87R"
)


def _array(count: int, dtype: str, raw: bytes) -> bytes:
    """numpy's own array pickle, with the declared shape and data chosen by the test."""
    dt = _call(
        "numpy", "dtype", b"X" + len(dtype).to_bytes(4, "little") + dtype.encode(), b"\x89\x88"
    )
    state = b"(K\x01" + _long(count) + b"\x85" + dt + b"\x89" + raw + b"tb"
    return _ARRAY_HEAD + state


PAYLOADS = {
    # The 30-byte file of the issue: builtins.bytearray(1 << 30).
    "bytearray-1GiB": P2 + _global("builtins", "bytearray") + b"J\x00\x00\x00\x40\x85R.",
    "bytearray-2**62": P2 + _call("builtins", "bytearray", _long(1 << 62)) + b".",
    "bytearray-2**70": P2 + _call("builtins", "bytearray", _long(1 << 70)) + b".",
    "binbytes8-2**62": b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b".",
    "bytearray8-1GiB": b"\x80\x05\x96" + (1 << 30).to_bytes(8, "little") + b".",
    "memo-index-2**32-1": P2 + b"Nr\xff\xff\xff\xff.",
    "numpy-reconstruct-1TiB": P2
    + _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray")
    + _long(1 << 40)
    + b"\x85C\x01b\x87R.",
    "legacy-bytearray-1GiB": _legacy(_call("builtins", "bytearray", b"J\x00\x00\x00\x40")),
    "legacy-array-of-1GiB": _legacy(_array(1 << 30, "u1", b"C\x00")),
    "legacy-storage-of-1TiB": _legacy(
        b"}X\n\x00\x00\x00state_dict}X\x01\x00\x00\x00w"
        + _global("torch._utils", "_rebuild_tensor_v2")
        + b"((X\x07\x00\x00\x00storage"
        + _global("torch", "FloatStorage")
        + b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
        + _long(1 << 38)
        + b"Nt"
        + b"QK\x00K\x01\x85K\x01\x85\x89"
        + _global("collections", "OrderedDict")
        + b")RtRss"
    ),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_tiny_files_cannot_make_the_loader_allocate(tmp_path: Path, name: str) -> None:
    path = tmp_path / "small.pth"
    path.write_bytes(PAYLOADS[name])
    assert path.stat().st_size < 400
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as e:
            read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMALL, f"{name}: the loader allocated {peak} bytes"
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_30_byte_payload_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(PAYLOADS["bytearray-1GiB"])
    assert path.stat().st_size == 30
    with pytest.raises(CheckpointError, match=r"allocate 1073741824 bytes.*nothing was allocated"):
        read_state_dict(path)


def test_a_memoised_list_passed_to_set_again_and_again_is_refused(tmp_path: Path) -> None:
    """Each call copies the list: 60 kB of pickle would build 2 000 sets of 10 000 items
    (half a gigabyte). The cost of the arguments counts against the same allowance."""
    items = b"".join(b"J" + i.to_bytes(4, "little") for i in range(10_000))
    main = (
        _global("builtins", "set")
        + b"q\x01"
        + b"0"  # memoise set, pop it
        + b"]q\x00("
        + items
        + b"e0"  # memoise the list, pop it
        + b"]("
        + b"h\x01h\x00\x85R" * 2_000
        + b"e"  # [set(list), set(list), ...]
    )
    path = tmp_path / "sets.pth"
    path.write_bytes(_legacy(main))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="the arguments of set"):
            read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * SMALL, f"the loader allocated {peak} bytes"


def _state_with_deep_key(depth: int) -> bytes:
    return _legacy(b"}X\n\x00\x00\x00state_dict}N" + b"\x85" * depth + b"K\x01ss")


def test_deep_nesting_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.pth"
    path.write_bytes(_state_with_deep_key(100_000))
    with pytest.raises(CheckpointError, match="deeper than"):
        read_state_dict(path)


#: Files that crash a loader without these checks (the interpreter dies with SIGSEGV), so each
#: is read in a child process.
CRASHERS = {
    # Hashing a tuple nested a million deep, as a dict key, overflows the C stack.
    "tuple-key-1e6-deep": _state_with_deep_key(1_000_000),
    # numpy fills an object array of 2**25 slots from a list of two items.
    "object-array-short-list": _legacy(_array(1 << 25, "O8", b"]K\x01aK\x02a")),
}


@pytest.mark.parametrize("name", list(CRASHERS))
def test_files_that_crash_an_unguarded_loader_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "crash.pth"
    path.write_bytes(CRASHERS[name])
    code = (
        "import sys\n"
        "from models import CheckpointError\n"
        "from models._formats import read_state_dict\n"
        "try:\n"
        "    read_state_dict(sys.argv[1])\n"
        "except CheckpointError as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{name}: the loader process died ({done.returncode})"
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr[-2000:]


def _bf16_v23_archive(path: Path) -> None:
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    model = torch.nn.Linear(8, 4).eval().to(torch.bfloat16)
    artifact = serialize(torch.export.export(model, (torch.randn(2, 8, dtype=torch.bfloat16),)))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("serialized_exported_program.json", artifact.exported_program)
        zf.writestr(
            "serialized_state_dict.pt", artifact.state_dict[: len(artifact.state_dict) // 2]
        )
        zf.writestr("serialized_constants.pt", artifact.constants)
        zf.writestr("serialized_example_inputs.pt", artifact.example_inputs)
        zf.writestr("version", ".".join(map(str, SCHEMA_VERSION)))


def test_an_export_archive_whose_weights_record_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "sapiens_0.3b_seg_bfloat16.pt2"
    _bf16_v23_archive(path)
    with pytest.raises(CheckpointError, match=r"not a readable torch\.export archive") as e:
        read_state_dict(path)
    assert "\n" not in str(e.value)


def test_a_storage_record_shorter_than_its_pickle_declares(tmp_path: Path) -> None:
    """The zip is intact, but the bytes of a tensor were cut: named, never read past."""
    path, cut = tmp_path / "full.pth", tmp_path / "cut.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:100] if info.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match=r"storage 0 holds 100 bytes.*declares 4096 x"):
        read_state_dict(cut)


def _formats(tmp: Path) -> dict[str, Path]:
    state = OrderedDict(w=torch.randn(3, 4), b=torch.arange(4, dtype=torch.int64))
    out = {name: tmp / f"{name}.pth" for name in ("zip", "legacy", "numpy-meta")}
    torch.save({"state_dict": state}, out["zip"])
    torch.save({"state_dict": state}, out["legacy"], _use_new_zipfile_serialization=False)
    meta = {"a": np.arange(5.0), "s": np.float32(2.5), "d": np.dtype("int16")}
    torch.save({"state_dict": state, "meta": meta}, out["numpy-meta"])
    out["torchscript"] = tmp / "ts.pt2"
    torch.jit.trace(torch.nn.Linear(4, 3), torch.ones(1, 4)).save(str(out["torchscript"]))
    out["export"] = tmp / "ex.pt2"
    program = torch.export.export(torch.nn.Linear(4, 3).eval(), (torch.ones(1, 4),))
    torch.export.save(program, str(out["export"]))
    return out


def test_a_file_cut_at_any_point_is_a_checkpoint_error(tmp_path: Path) -> None:
    for fmt, full in _formats(tmp_path).items():
        data = full.read_bytes()
        read_state_dict(full)  # whole, it reads
        cut = tmp_path / "cut.pth"
        for size in sorted({*range(0, len(data), max(1, len(data) // 97)), len(data) - 1}):
            cut.write_bytes(data[:size])
            try:
                read_state_dict(cut)
            except CheckpointError as e:
                assert "\n" not in str(e), (fmt, size)
            else:
                pytest.fail(f"{fmt} cut to {size} of {len(data)} bytes was read")
