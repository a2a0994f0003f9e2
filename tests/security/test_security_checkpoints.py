"""Checkpoint loading refuses pickles that would run code.

Already covered in tests/unit/models/test_checkpoint.py:

* ``test_crafted_pickle_is_refused_and_runs_nothing``: a ``torch.save`` zip archive whose
  ``meta`` has a ``__reduce__`` returning ``os.system`` -> ``UnsafeCheckpointError``, no file;
* ``test_builtins_eval_is_refused``: ``__reduce__`` returning ``eval``;
* ``test_official_pth_with_mmengine_meta_loads_without_mmengine``: OpenMMLab objects become
  inert placeholders.

Added here: the legacy (non-zip) ``torch.save`` format, bare pickles of every protocol,
Python-2 era global names, other code-running globals, ``__reduce__`` hidden in an OpenMMLab
class, the RT-DETR weights loader (``weights_only=True``), malformed pickles that run nothing
but must still be a ``CheckpointError``, and the numpy and codec globals a released file needs,
accepted only with the arguments numpy and protocol 2 write.

Elsewhere: TorchScript and ``torch.export`` archives that run code when torch loads them
(``test_ckpt_code_execution.py``), allocation, nesting and truncation limits
(``test_ckpt_resource_limits.py``), released-format stand-ins read exactly
(``tests/unit/models/test_ckpt_released_formats.py``).
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from models import CheckpointError, UnsafeCheckpointError, _unpickle
from models._formats import read_state_dict
from models._unpickle import OpaqueObject


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _state() -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(w=torch.zeros(2, 3), b=torch.ones(3))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("where", ["meta", "state_dict_value", "top_level"])
def test_torch_save_with_an_os_system_reduce_is_refused(
    tmp_path: Path, marker: Path, zip_format: bool, where: str
) -> None:
    exploit = _Exploit(marker)
    obj: object = {
        "meta": {"state_dict": _state(), "meta": {"hook": exploit}},
        "state_dict_value": {"state_dict": OrderedDict(w=torch.zeros(1), evil=exploit)},
        "top_level": exploit,
    }[where]
    path = tmp_path / "evil.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match=r"system.*not on the allow-list"):
        read_state_dict(path)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_bare_pickles_of_every_protocol_are_refused(
    tmp_path: Path, marker: Path, protocol: int
) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": _state(), "x": _Exploit(marker)}, protocol))
    with pytest.raises(UnsafeCheckpointError):
        read_state_dict(path)


def _global_call(module: str, name: str, arg: str) -> bytes:
    """A protocol-0 pickle that calls ``module.name(arg)``."""
    return f"c{module}\n{name}\n(V{arg}\ntR.".encode()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("__builtin__", "eval"),  # Python 2 names are mapped, then checked
        ("__builtin__", "open"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("posix", "system"),
        ("os", "popen"),
        ("subprocess", "Popen"),
        ("subprocess", "check_output"),
        ("copyreg", "_reconstructor"),
        ("importlib", "import_module"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("torch.hub", "load"),
        ("numpy", "load"),
        ("runpy", "run_path"),
        ("pickle", "loads"),
        ("io", "open"),
        ("shutil", "rmtree"),
    ],
)
def test_code_running_globals_are_refused_before_any_call(
    tmp_path: Path, marker: Path, module: str, name: str
) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(_global_call(module, name, f"touch {marker}"))
    with pytest.raises(UnsafeCheckpointError, match="not on the allow-list"):
        read_state_dict(path)


def test_a_reduce_hidden_in_an_openmmlab_class_stays_an_inert_placeholder(
    tmp_path: Path, marker: Path
) -> None:
    """A class of an OpenMMLab package is never imported: its ``__reduce__`` arguments are
    recorded by the placeholder, and the file's weights still load."""
    fake = types.ModuleType("mmengine.sec_fake")

    class Runner:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Runner, (f"touch {marker}",))

    Runner.__module__, Runner.__qualname__ = fake.__name__, "Runner"
    fake.Runner = Runner  # type: ignore[attr-defined]
    saved = {n: sys.modules.get(n) for n in ("mmengine", fake.__name__)}
    sys.modules.update({"mmengine": types.ModuleType("mmengine"), fake.__name__: fake})
    try:
        path = tmp_path / "mm.pth"
        torch.save({"state_dict": _state(), "meta": {"runner": Runner()}}, path)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    state, fmt = read_state_dict(path)
    assert fmt == "pth" and sorted(state) == ["b", "w"]
    obj = torch.load(path, weights_only=False, pickle_module=_unpickle)
    runner = obj["meta"]["runner"]
    assert isinstance(runner, OpaqueObject)
    assert runner.args == (f"touch {marker}",)  # recorded, never called


def test_rtdetr_weights_are_read_with_weights_only(tmp_path: Path, marker: Path) -> None:
    from models._rtdetr import _read_weights

    path = tmp_path / "rtdetr.pth"
    torch.save({"model": _state(), "evil": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        _read_weights(path, ["https://example.invalid/rtdetr.pth"])
    torch.save(dict(_state()), path)
    assert sorted(_read_weights(path, ["https://example.invalid/rtdetr.pth"])) == ["b", "w"]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("numpy.dtypes", "NoSuchDType"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("torch", "float32"),
    ],
)
def test_malformed_pickles_of_allowed_names_are_checkpoint_errors(
    tmp_path: Path, marker: Path, module: str, name: str
) -> None:
    path = tmp_path / "odd.pth"
    path.write_bytes(_global_call(module, name, f"touch {marker}"))
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _g(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _s(text: str) -> bytes:
    raw = text.encode("utf-8")
    return b"X" + len(raw).to_bytes(4, "little") + raw


_NDARRAY = _g("numpy", "ndarray")
_EMPTY_ARRAY = _g("numpy._core.multiarray", "_reconstruct") + _NDARRAY + b"K\x00\x85C\x01b\x87R"
_F8 = _g("numpy", "dtype") + _s("f8") + b"\x89\x88\x87R"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (_g("_codecs", "encode") + _s("abc") + _s("utf-8") + b"\x86R", "_codecs.encode"),
        (_g("_codecs", "encode") + b"C\x03abc" + _s("latin1") + b"\x86R", "_codecs.encode"),
        (_g("builtins", "bytearray") + _s("abc") + _s("utf-8") + b"\x86R", "bytearray"),
        (_g("numpy.core.multiarray", "_reconstruct") + _NDARRAY + b"K\x0a\x85C\x01b\x87R", "_rec"),
        (
            _g("numpy._core.multiarray", "_reconstruct")
            + _g("collections", "OrderedDict")
            + b"K\x00\x85C\x01b\x87R",
            "_reconstruct",
        ),
        (_NDARRAY + b"K\x0a\x85R", "numpy.ndarray directly"),
        (_NDARRAY + b")\x81", "not a type object"),  # NEWOBJ: the name resolves to no class
        (_g("numpy", "dtype") + _g("numpy", "ndarray") + b"\x85R", "type code"),
        (
            _g("numpy", "dtype")
            + _s("V8")
            + b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00|N"
            + b"\x8c\x01a\x85}\x8c\x01a"
            + _F8
            + b"K\x00\x86sK\x08K\x01K\x10tb",
            "dtype state",
        ),
        (_EMPTY_ARRAY + b"(K\x01K\x04\x85" + _F8 + b"\x89C\x08" + b"\x00" * 8 + b"tb", "bytes"),
        (_EMPTY_ARRAY + b"(K\x01K\x04\x85" + _F8 + b"\x89]tb", "without 32 bytes"),
        (_g("numpy.core.multiarray", "scalar") + _F8 + b"C\x04\x00\x00\x00\x00\x86R", "8 bytes"),
        (_g("numpy._core.multiarray", "scalar") + _F8 + b"\x85R", "a dtype and a value"),
        (_g("builtins", "set") + b")R}b", "sets the state of a set"),
        (_g("collections", "OrderedDict") + b")R}X\x01\x00\x00\x00xK\x01sb", "OrderedDict"),
        (
            _g("numpy", "dtype")
            + _s("f8")
            + b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00<"
            + _F8
            + b"K\x02\x85\x86NNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
            "dtype state",
        ),
        (_g("builtins", "slice") + _g("builtins", "slice") + b"K\x01\x85RK\x02\x86R", "slice"),
    ],
    ids=[
        "codecs-utf8",
        "codecs-of-bytes",
        "bytearray-utf8",
        "reconstruct-shape",
        "reconstruct-subtype",
        "ndarray-call",
        "ndarray-newobj",
        "dtype-of-object",
        "structured-dtype",
        "array-of-wrong-size",
        "array-of-a-list",
        "scalar-short",
        "scalar-no-value",
        "build-set",
        "build-ordereddict-attr",
        "subarray-dtype",
        "slice-of-slice",
    ],
)
def test_allowed_names_accept_only_what_numpy_and_pickle_write(
    tmp_path: Path, body: bytes, match: str
) -> None:
    """The numpy and codec globals a released file needs are allowed with the arguments numpy
    and protocol 2 write, and nothing else (numpy's own checks come after allocation, or never:
    an object array filled from a short list crashes the interpreter)."""
    path = tmp_path / "odd.pth"
    path.write_bytes(_pickle(body))
    expected = CheckpointError if match == "not a type object" else UnsafeCheckpointError
    with pytest.raises(expected, match=match):
        read_state_dict(path)
