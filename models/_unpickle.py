"""A restricted unpickler for the pickled parts of checkpoint files.

The released ``.pth`` checkpoints are ``torch.save`` archives whose ``meta`` entry holds objects of
OpenMMLab classes (``mmengine`` message hubs and history buffers) with numpy arrays, scalars and
dtypes inside. TorchScript archives pickle their modules as objects of ``__torch__`` classes.
Loading either with plain ``pickle`` would import those packages and run whatever callables the
file names. This unpickler:

* resolves tensor-rebuild functions, ``OrderedDict``, torch dtypes and storage types, numpy array,
  scalar and dtype reconstruction (under ``numpy.core`` and ``numpy._core``), ``_codecs.encode``
  of latin-1 text (how protocol 2 writes bytes) and a few inert builtins (an allow-list);
* turns every class of an OpenMMLab package (and, for TorchScript archives, of ``__torch__``) into
  an :class:`OpaqueObject` that only records its arguments and state;
* refuses every other global (``os.system``, ``builtins.eval``, ...) with
  :class:`~models.errors.UnsafeCheckpointError` before anything is called;
* checks the size of everything an allowed constructor would allocate against a budget derived
  from the file size (``models._pickle_checks``) before allocating it, and refuses nesting that
  would make hashing or printing the result overflow the stack.

It is built on :class:`pickle._Unpickler`, the pure-Python implementation, because only there can
``BUILD`` (which calls ``__setstate__``) and ``BYTEARRAY8`` be checked before they run.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, ClassVar

import numpy as np
import torch

from models._pickle_checks import (
    AllocationBudget,
    budget_of,
    check_array_state,
    check_dtype_state,
    check_scalar,
    refuse,
)
from models.errors import CheckpointError, UnsafeCheckpointError

__all__ = ["OpaqueObject", "StorageType", "Unpickler", "load"]

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
#: The package TorchScript names its module classes in (placeholders only in ``script`` mode).
SCRIPT_PACKAGE = "__torch__"
#: Deepest nesting of tuples accepted; hashing a much deeper one overflows the C stack.
MAX_NESTING = 200
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
#: Arguments whose elements a call may copy; charged per element (8 bytes each).
_SIZED = (list, tuple, dict, set, frozenset, str, bytes, bytearray)
_TORCH_REBUILDERS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_numpy",
)
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
    "UntypedStorage": torch.uint8,
}


@dataclass(frozen=True, slots=True)
class StorageType:
    """A pickled storage class (``torch.FloatStorage``, ...): only its element type is kept."""

    dtype: torch.dtype


class OpaqueObject:
    """Inert stand-in for an object of a class that is not imported (e.g. mmengine's).

    It keeps the class path, the constructor arguments and the pickled state for inspection,
    and has no behaviour.
    """

    __module_path__ = "?"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        self = super().__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.__module_path__}>"


def _is_metadata_state(state: Any) -> bool:
    """``module.state_dict()`` is an OrderedDict with a ``_metadata`` attribute (versions)."""
    return isinstance(state, dict) and list(state) == ["_metadata"]


def _identity(value: Any, *_: Any) -> Any:
    return value


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
    }
    for name in _TORCH_REBUILDERS:
        if hasattr(torch._utils, name):
            table["torch._utils", name] = getattr(torch._utils, name)
    for name, dtype in _STORAGE_DTYPES.items():
        table["torch", name] = StorageType(dtype)
    return table


_ALLOWED = _allowed()
#: Globals TorchScript archives use for typed containers; all return their first argument.
_SCRIPT_HELPERS = frozenset(
    ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "restore_type_tag")
)
#: Allowed globals that allocate: resolved to methods of the unpickler that check sizes first.
_GUARDED: dict[tuple[str, str], str] = {
    ("builtins", "bytearray"): "_bytearray",
    ("builtins", "slice"): "_slice",
    ("_codecs", "encode"): "_codecs_encode",
    ("numpy", "dtype"): "_np_dtype",
    ("numpy", "ndarray"): "_np_ndarray",
}
for _mod in _NUMPY_CORE:
    _GUARDED.update(
        {
            (_mod, "_reconstruct"): "_np_reconstruct",
            (_mod, "scalar"): "_np_scalar",
            (_mod, "dtype"): "_np_dtype",
            (_mod, "ndarray"): "_np_ndarray",
        }
    )


class Unpickler(pickle._Unpickler):
    """Allow-list unpickler (see the module doc).

    Args:
        file: the pickle stream.
        budget: allocation allowance; default: four times the rest of ``file`` plus 1 MiB if
            it can seek, else 64 MiB.
        persistent_load: resolver of persistent ids (tensor storages); none are accepted
            without it.
        script: also make ``__torch__`` classes (TorchScript modules) opaque.
        encoding: for protocol-2 ``str`` written by Python 2, as in :mod:`pickle`.
    """

    dispatch: ClassVar[dict[int, Callable[[pickle._Unpickler], None]]] = dict(
        pickle._Unpickler.dispatch
    )

    def __init__(
        self,
        file: IO[bytes],
        *,
        budget: AllocationBudget | None = None,
        persistent_load: Callable[[Any], Any] | None = None,
        script: bool = False,
        encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        super().__init__(file, encoding=encoding, **kwargs)
        self.budget = budget or budget_of(file)
        self.script = script
        self._opaque: dict[tuple[str, str], type[OpaqueObject]] = {}
        self._nested: dict[int, tuple[tuple[Any, ...], int]] = {}
        if persistent_load is not None:
            self.persistent_load = persistent_load  # type: ignore[method-assign]

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 era names (protocol < 3 writes ``__builtin__``), mapped as pickle itself does;
        # the result still has to pass the allow-list below.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if key in _GUARDED:
            return getattr(self, _GUARDED[key])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        if self.script and module == "torch.jit._pickle" and name in _SCRIPT_HELPERS:
            return _identity
        top = module.split(".")[0]
        if top in OPAQUE_PACKAGES or (self.script and top == SCRIPT_PACKAGE):
            if key not in self._opaque:
                attrs = {"__module_path__": f"{module}.{name}"}
                self._opaque[key] = type(name, (OpaqueObject,), attrs)
            return self._opaque[key]
        msg = (
            f"checkpoint refers to {module}.{name}, which is not on the allow-list of a weights "
            "file; refusing to load it (nothing from the file was executed). Load only "
            "checkpoints from sources you trust, or convert it to safetensors."
        )
        raise UnsafeCheckpointError(msg)

    # -- allowed constructors that allocate: sizes are checked first ----------------------------

    def _bytearray(self, *args: Any) -> bytearray:
        if not args:
            return bytearray()
        source = args[0]
        copy = len(args) == 1 and isinstance(source, (bytes, bytearray))
        text = len(args) == 2 and type(source) is str and args[1] in ("latin-1", "latin1")
        if len(args) == 1 and type(source) is int:
            self.budget.charge(source, "bytearray(n)")
        elif copy or text:
            self.budget.charge(len(source), "bytearray")
        else:
            raise refuse("calls bytearray with arguments a pickled bytearray never has")
        return bytearray(*args)

    def _slice(self, *args: Any) -> slice:
        # Only integer bounds: a slice of slices nests without limit (and hashes on 3.12+).
        if not 1 <= len(args) <= 3 or any(a is not None and type(a) is not int for a in args):
            raise refuse("calls slice with other than integer bounds")
        return slice(*args)

    def _codecs_encode(self, text: Any, encoding: Any = None) -> bytes:
        # Protocol 2 writes ``bytes`` as _codecs.encode(<latin-1 text>, 'latin1'); nothing else.
        if type(text) is not str or encoding != "latin1":
            raise refuse("calls _codecs.encode other than on latin-1 text")
        self.budget.charge(len(text), "bytes")
        return text.encode("latin1")

    def _np_dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype[Any]:
        if type(spec) is not str or type(align) is not bool or type(copy) is not bool:
            raise refuse(f"builds a numpy dtype from {type(spec).__name__}, not a type code")
        return np.dtype(spec, align=align, copy=copy)

    def _np_ndarray(self, *args: Any, **kwargs: Any) -> None:
        # Only ever the first argument of _reconstruct; calling it would allocate any shape.
        raise refuse("calls numpy.ndarray directly")

    def _np_reconstruct(self, subtype: Any, shape: Any, typecode: Any) -> np.ndarray[Any, Any]:
        # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') + BUILD(state).
        if subtype != self._np_ndarray or shape != (0,) or typecode != b"b":
            raise refuse("calls numpy's _reconstruct with arguments numpy never writes")
        return np._core.multiarray._reconstruct(np.ndarray, (0,), b"b")  # type: ignore[no-any-return]

    def _np_scalar(self, dtype: Any, *args: Any) -> Any:
        check_scalar(dtype, args, self.budget)
        return np._core.multiarray.scalar(dtype, *args)

    # -- opcodes checked before they run ---------------------------------------------------------

    def _charge_call(self, func: Any, args: Any, kwargs: Any = None) -> None:
        """Calls copy their arguments (``set(memoised_list)``); charge them, except the guarded
        constructors above, which charge what they allocate themselves."""
        if not isinstance(args, tuple) or not isinstance(kwargs, dict | None):
            raise pickle.UnpicklingError("call arguments are not a tuple (and a dict)")
        if getattr(func, "__self__", None) is self:
            return
        values = [*args, *(kwargs or {}).values()]
        items = len(values) + sum(len(v) for v in values if isinstance(v, _SIZED))
        self.budget.charge(8 * items, f"the arguments of {getattr(func, '__name__', '?')}")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self._charge_call(self.stack[-1], args)
        self.stack[-1] = self.stack[-1](*args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._charge_call(cls, args)
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._charge_call(cls, args, kwargs)
        self.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ (protocols 0 and 1)
        self._charge_call(klass, tuple(args) if isinstance(args, list) else args)
        super()._instantiate(klass, args)

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, OpaqueObject):
            inst.__setstate__(state)
        elif type(inst) is np.ndarray:
            check_array_state(state, self.budget)
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            check_dtype_state(state)
            inst.__setstate__(state)
        elif type(inst) is collections.OrderedDict and _is_metadata_state(state):
            inst._metadata = state["_metadata"]  # type: ignore[attr-defined]
        else:
            raise refuse(f"sets the state of a {type(inst).__name__}, which no weights file does")

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        size = int.from_bytes(self.read(8), "little")
        self.budget.charge(size, "bytearray")
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(bytearray(data))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def _check_nesting(self) -> None:
        new = self.stack[-1]
        depth = 1 + max((self._depth(x) for x in new), default=0)
        if depth > MAX_NESTING:
            raise CheckpointError(f"checkpoint nests tuples deeper than {MAX_NESTING} levels")
        if depth > 1:
            self._nested[id(new)] = (new, depth)

    def _depth(self, item: Any) -> int:
        if type(item) is not tuple:
            return 0
        return self._nested.get(id(item), (item, 1))[1]

    def load_tuple(self) -> None:
        super().load_tuple()
        self._check_nesting()

    def load_tuple1(self) -> None:
        super().load_tuple1()
        self._check_nesting()

    def load_tuple2(self) -> None:
        super().load_tuple2()
        self._check_nesting()

    def load_tuple3(self) -> None:
        super().load_tuple3()
        self._check_nesting()

    dispatch[pickle.TUPLE[0]] = load_tuple
    dispatch[pickle.TUPLE1[0]] = load_tuple1
    dispatch[pickle.TUPLE2[0]] = load_tuple2
    dispatch[pickle.TUPLE3[0]] = load_tuple3


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` through :class:`Unpickler`."""
    return Unpickler(file, **kwargs).load()
