"""Stand-ins for the released checkpoint files, written by the code that wrote the real ones, read
back exactly by the data-only readers.

* Official ``.pth``: ``torch.save`` (protocol 2, its default) of ``state_dict`` + a ``meta`` whose
  mmengine message hub holds numpy arrays, scalars and dtypes. numpy 2 pickles those under
  ``numpy._core``; the released files, written with numpy 1, name ``numpy.core``.
* ``_torchscript.pt2``: ``torch.jit.trace(...).save``; the reference is ``torch.jit.load`` of the
  same trusted file.
* ``_bfloat16.pt2``: ``torch.export.save`` (the current archive layout) and the layout of
  PyTorch 2.3, which wrote the released files; the reference is ``torch.export.load``.
"""

from __future__ import annotations

import pickle
import pickletools
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models import _unpickle, load_checkpoint
from models._formats import read_state_dict
from models._unpickle import OpaqueObject
from tests.unit.models.official_reference import OfficialModel

_MM_MODULES = (
    "mmengine",
    "mmengine.logging",
    "mmengine.logging.message_hub",
    "mmengine.logging.history_buffer",
)


@contextmanager
def _modules(mods: dict[str, types.ModuleType]) -> Iterator[None]:
    """Register ``mods`` in ``sys.modules`` while saving; put back what was there."""
    saved = {name: sys.modules.get(name) for name in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                del sys.modules[name]
            else:
                sys.modules[name] = old


def _mm_classes() -> tuple[dict[str, types.ModuleType], type, type]:
    """Classes named and shaped like mmengine's MessageHub / HistoryBuffer, in modules named like
    mmengine's, so pickle writes the same GLOBAL opcodes the released files have."""
    mods = {name: types.ModuleType(name) for name in _MM_MODULES}

    class HistoryBuffer:
        def __init__(self, values: list[float]) -> None:
            self._log_history = np.asarray(values, dtype=np.float64)
            self._count_history = np.ones(len(values), dtype=np.int64)
            self.max_length = 1000000
            self.last = np.float64(values[-1])
            self.dtype = np.dtype("float32")

    class MessageHub:
        def __init__(self) -> None:
            self.instance_name = "sapiens"
            self._log_scalars = OrderedDict(loss=HistoryBuffer([0.5, 0.25]))
            self._runtime_info = {"epoch": 210, "iter": np.int64(7), "max_iters": 1000}
            self._resumed_keys = OrderedDict(epoch=True)

    for cls, module in ((HistoryBuffer, _MM_MODULES[3]), (MessageHub, _MM_MODULES[2])):
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(mods[module], cls.__name__, cls)
    return mods, MessageHub, HistoryBuffer


def _numpy1_names() -> tuple[dict[str, types.ModuleType], types.ModuleType]:
    """A pickle module for ``torch.save`` that writes numpy objects as numpy 1.x did.

    Its Pickler's ``reducer_override`` returns numpy's own reduce value for arrays and scalars,
    with the reconstruction function swapped for a stand-in named
    ``numpy.core.multiarray.<same name>`` (registered under that module name while saving), so
    the GLOBAL opcodes name ``numpy.core.multiarray`` and everything else is numpy's own output.
    """
    core = types.ModuleType("numpy.core.multiarray")

    def stand_in(name: str) -> Any:
        def fn(*args: Any) -> Any:
            raise AssertionError("a save-time stand-in is never called")

        fn.__module__, fn.__name__, fn.__qualname__ = core.__name__, name, name
        setattr(core, name, fn)
        return fn

    stand_ins = {name: stand_in(name) for name in ("_reconstruct", "scalar")}

    class Numpy1Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is np.ndarray or isinstance(obj, np.generic):
                fn, *rest = obj.__reduce__()
                return (stand_ins[fn.__name__], *rest)
            return NotImplemented

    pickle_module = types.ModuleType("numpy1_pickle")
    pickle_module.Pickler = Numpy1Pickler  # type: ignore[attr-defined]
    return {core.__name__: core}, pickle_module


def _save_released(path: Path, state: dict[str, torch.Tensor], numpy_path: str, proto: str) -> Any:
    mm, message_hub, history_buffer = _mm_classes()
    kwargs: dict[str, Any] = {} if proto == "default" else {"pickle_protocol": 2}
    mods = dict(mm)
    if numpy_path == "numpy.core":
        core, pickle_module = _numpy1_names()
        mods.update(core)
        kwargs["pickle_module"] = pickle_module
    meta = {
        "epoch": 210,
        "hub": message_hub(),
        "dataset_meta": {"flip_indices": np.arange(17), "sigmas": np.full(17, 0.025, np.float32)},
    }
    checkpoint = {
        "state_dict": state,
        "meta": meta,
        "message_hub": {"log_scalars": {"loss": history_buffer([1.0, 0.5, 0.125])}},
    }
    with _modules(mods):
        torch.save(checkpoint, path, **kwargs)
    return checkpoint


def _globals_of(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.parametrize("proto", ["default", "protocol-2"])
@pytest.mark.parametrize("numpy_path", ["numpy._core", "numpy.core"])
def test_released_pth_with_numpy_in_its_mmengine_meta_loads_exactly(
    tmp_path: Path, numpy_path: str, proto: str
) -> None:
    ref = OfficialModel("pose").eval()
    state = ref.state_dict()
    path = tmp_path / "sapiens_tiny_goliath_best_goliath_AP_573.pth"
    saved = _save_released(path, state, numpy_path, proto)
    names = _globals_of(path)
    other = "numpy.core" if numpy_path == "numpy._core" else "numpy._core"
    assert {"_codecs encode", f"{numpy_path}.multiarray _reconstruct"} <= names
    assert f"{numpy_path}.multiarray scalar" in names
    assert not any(n.startswith(f"{other}.") for n in names)
    assert "mmengine.logging.message_hub MessageHub" in names

    got, fmt = read_state_dict(path)
    assert fmt == "pth"
    assert list(got) == list(state)
    for key, value in state.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key

    obj = torch.load(path, weights_only=False, pickle_module=_unpickle)  # the unpickler alone
    hub = obj["meta"]["hub"]
    assert isinstance(hub, OpaqueObject)
    assert hub.__module_path__ == "mmengine.logging.message_hub.MessageHub"
    buffer = hub.state["_log_scalars"]["loss"]
    assert isinstance(buffer, OpaqueObject)
    assert buffer.__module_path__ == "mmengine.logging.history_buffer.HistoryBuffer"
    want = saved["meta"]["hub"]._log_scalars["loss"]
    assert np.array_equal(buffer.state["_log_history"], want._log_history)
    assert buffer.state["_log_history"].dtype == np.float64
    assert np.array_equal(buffer.state["_count_history"], want._count_history)
    assert buffer.state["last"] == np.float64(0.25) and type(buffer.state["last"]) is np.float64
    assert buffer.state["dtype"] == np.dtype("float32")
    assert hub.state["_runtime_info"]["iter"] == 7
    sigmas = obj["meta"]["dataset_meta"]["sigmas"]
    assert sigmas.dtype == np.float32 and np.array_equal(
        sigmas, saved["meta"]["dataset_meta"]["sigmas"]
    )
    loss = obj["message_hub"]["log_scalars"]["loss"]
    assert np.array_equal(loss.state["_log_history"], [1.0, 0.5, 0.125])

    model = load_checkpoint(path, task="pose")
    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x)["pose"] - ref(x)).abs().max().item() <= 1e-4
    assert "mmengine" not in sys.modules


def _torch_state(reference: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(reference)
    for key, value in reference.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value.detach()), key


def test_torchscript_weights_are_what_torch_jit_load_gives(tmp_path: Path) -> None:
    ref = OfficialModel("seg").eval()
    path = tmp_path / "sapiens_tiny_seg_torchscript.pt2"
    with torch.no_grad():
        torch.jit.trace(ref, torch.randn(1, 3, 256, 192)).save(str(path))
    got, fmt = read_state_dict(path)
    assert fmt == "torchscript"
    _torch_state(torch.jit.load(str(path)).state_dict(), got)  # trusted: written just above


def _exported(dtype: torch.dtype = torch.bfloat16) -> torch.export.ExportedProgram:
    ref = OfficialModel("depth").eval().to(dtype)
    return torch.export.export(ref, (torch.randn(1, 3, 256, 192, dtype=dtype),))


def test_export_archive_weights_are_what_torch_export_load_gives(tmp_path: Path) -> None:
    path = tmp_path / "sapiens_tiny_depth_bfloat16.pt2"
    torch.export.save(_exported(), str(path))
    got, fmt = read_state_dict(path)
    assert fmt == "export"
    _torch_state(torch.export.load(str(path)).state_dict, got)


def save_export_v23(program: torch.export.ExportedProgram, path: Path) -> None:
    """The archive layout of ``torch.export.save`` in PyTorch 2.3 (which wrote the released
    ``_bfloat16.pt2`` files): the serialised program, state dict, constants and example inputs
    from ``torch._export.serde.serialize.serialize``, one top-level record each."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    artifact = serialize(program)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("serialized_exported_program.json", artifact.exported_program)
        zf.writestr("serialized_state_dict.pt", artifact.state_dict)
        zf.writestr("serialized_constants.pt", artifact.constants)
        zf.writestr("serialized_example_inputs.pt", artifact.example_inputs)
        zf.writestr("version", ".".join(map(str, SCHEMA_VERSION)))


def test_export_archive_of_pytorch_2_3_is_read_as_torch_export_load_reads_it(
    tmp_path: Path,
) -> None:
    program = _exported()
    path = tmp_path / "sapiens_tiny_depth_bfloat16.pt2"
    save_export_v23(program, path)
    got, fmt = read_state_dict(path)
    assert fmt == "export"
    _torch_state(torch.export.load(str(path)).state_dict, got)
    model = load_checkpoint(path, task="depth", dtype=torch.bfloat16)
    assert model.checkpoints["depth"].fmt == "export"


def test_legacy_torch_save_format_reads_views_and_shared_storages(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32)
    state = {"a": base[2:8].view(2, 3), "b": base, "c": torch.ones(3, dtype=torch.bfloat16)}
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    got, _ = read_state_dict(path)
    _torch_state(state, got)
    assert got["a"].untyped_storage().data_ptr() == got["b"].untyped_storage().data_ptr()
