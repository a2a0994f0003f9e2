"""A restricted unpickler for the official ``.pth`` checkpoints.

The released checkpoints are ``torch.save`` archives whose ``meta`` entry holds objects of
OpenMMLab classes (``mmengine`` message hubs, history buffers, config dicts). Loading them with
plain ``pickle`` would import those packages and run whatever callables the file names. This
module is handed to ``torch.load`` as its ``pickle_module``:

* tensor-rebuild functions, ``OrderedDict``, dtypes, numpy array reconstruction and a few inert
  builtins are resolved normally (an allow-list);
* any class of an OpenMMLab package becomes an :class:`OpaqueObject` that only records its
  arguments and state, so no code of that package is imported or run;
* every other global (``os.system``, ``builtins.eval``, ...) is refused with
  :class:`~models.errors.UnsafeCheckpointError` before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import pickle
from typing import IO, Any

import numpy as np
import torch

from models.errors import UnsafeCheckpointError

__all__ = ["OpaqueObject", "Unpickler", "load"]

#: Packages whose classes are replaced by inert placeholders rather than imported.
OPAQUE_PACKAGES: tuple[str, ...] = (
    "mmengine",
    "mmcv",
    "mmpose",
    "mmseg",
    "mmdet",
    "mmpretrain",
    "mmcls",
)

_TORCH_REBUILDERS = frozenset(
    {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_device_tensor_from_numpy",
    }
)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in _TORCH_REBUILDERS:
        if hasattr(torch._utils, name):
            table["torch._utils", name] = getattr(torch._utils, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[mod, "_reconstruct"] = np._core.multiarray._reconstruct
        table[mod, "scalar"] = np._core.multiarray.scalar
    return table


_ALLOWED = _allowed()


class OpaqueObject:
    """Inert stand-in for an object of a class that is not imported (e.g. mmengine's).

    It keeps the class path, the constructor arguments and the pickled state for inspection,
    and has no behaviour.
    """

    __module_path__ = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.__module_path__}>"


def _opaque_class(module: str, name: str) -> type[OpaqueObject]:
    return type(name, (OpaqueObject,), {"__module_path__": f"{module}.{name}"})


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals (see the module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 era names (protocol < 3 writes ``__builtin__``), mapped as pickle itself does;
        # the result still has to pass the allow-list below.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        if module.split(".")[0] in OPAQUE_PACKAGES:
            return _opaque_class(module, name)
        msg = (
            f"checkpoint refers to {module}.{name}, which is not on the allow-list of a weights "
            "file; refusing to load it (nothing from the file was executed). Load only "
            "checkpoints from sources you trust, or convert it to safetensors."
        )
        raise UnsafeCheckpointError(msg)


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`Unpickler` (used by ``torch.load`` for legacy files)."""
    return Unpickler(file, **kwargs).load()
