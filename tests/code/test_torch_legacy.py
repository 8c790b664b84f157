"""The PyTorch-free reader of legacy torch files: round trip, strides, checksum, allow-list, damage."""
import collections
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from fracturelib.files import sha256_file
from fracturelib.models import torch_legacy as tl


class _FakeTorch:
    """Just enough of a ``torch`` module for pickle to write references to its globals."""

    def __init__(self, monkeypatch):
        torch = types.ModuleType("torch")
        utils = types.ModuleType("torch._utils")

        def _rebuild_tensor_v2(*a):
            raise AssertionError("never called while writing")
        _rebuild_tensor_v2.__module__ = "torch._utils"
        _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        for name in ("FloatStorage", "LongStorage"):
            setattr(torch, name, type(name, (), {"__module__": "torch"}))
        torch._utils = utils
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "torch._utils", utils)
        self.torch, self.utils = torch, utils


class _Tensor:
    def __init__(self, fake, storage_key, storage_type, offset, size, stride):
        self.fake, self.args = fake, (storage_key, storage_type, offset, size, stride)

    def __reduce__(self):
        key, stype, offset, size, stride = self.args
        return (self.fake.utils._rebuild_tensor_v2,
                (("storage", stype, key, "cpu"), offset, size, stride, False, collections.OrderedDict()))


def write_legacy(path, fake, storages: dict, tensors: dict):
    """storages: key -> (torch storage class name, 1-D numpy array); tensors: name -> (key, offset,
    size, stride). Writes the five pickles and the raw storages like torch.save(legacy) does."""
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "storage":
                _, stype, key, loc = obj
                return ("storage", getattr(fake.torch, stype), key, loc, len(storages[key][1]), None)
            return None
    with open(path, "wb") as f:
        for obj in (tl.MAGIC_NUMBER, tl.PROTOCOL_VERSION,
                    {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}):
            pickle.dump(obj, f, protocol=2)
        sd = collections.OrderedDict(
            (n, _Tensor(fake, k, storages[k][0], o, sz, st)) for n, (k, o, sz, st) in tensors.items())
        P(f, protocol=2).dump(sd)
        pickle.dump(list(storages), f, protocol=2)
        for stype, arr in storages.values():
            f.write(struct.pack("<q", len(arr)))
            f.write(np.ascontiguousarray(arr).astype(tl.STORAGE_DTYPES[stype]).tobytes())


@pytest.fixture
def fake(monkeypatch):
    return _FakeTorch(monkeypatch)


def test_round_trip_with_offsets_and_strides(tmp_path, fake):
    data = np.arange(24, dtype=np.float32)
    write_legacy(tmp_path / "w.pth", fake, {"0": ("FloatStorage", data), "1": ("LongStorage", np.array([7]))},
                 {"conv.weight": ("0", 0, (2, 3, 4), (12, 4, 1)),
                  "t": ("0", 2, (3, 2), (1, 3)),                 # a transposed view at an offset
                  "bn.num_batches_tracked": ("1", 0, (), ())})
    sd = tl.load_state_dict(tmp_path / "w.pth", sha256_file(tmp_path / "w.pth"))
    assert list(sd) == ["conv.weight", "t", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(sd["conv.weight"], data.reshape(2, 3, 4))
    np.testing.assert_array_equal(sd["t"], np.lib.stride_tricks.as_strided(data[2:], (3, 2), (4, 12)))
    assert sd["conv.weight"].dtype == np.float32 and sd["bn.num_batches_tracked"] == 7


def test_checksum_is_checked_before_parsing(tmp_path, fake):
    write_legacy(tmp_path / "w.pth", fake, {"0": ("FloatStorage", np.ones(3))}, {"a": ("0", 0, (3,), (1,))})
    with pytest.raises(tl.TorchFileError, match="SHA-256"):
        tl.load_state_dict(tmp_path / "w.pth", "0" * 64)


def test_a_pickle_that_asks_for_code_is_refused_and_not_run(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))
    with open(tmp_path / "evil.pth", "wb") as f:
        for obj in (tl.MAGIC_NUMBER, tl.PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"x": Evil()}, f, protocol=2)
    with pytest.raises(tl.UnsafePickleError, match="system"):
        tl.load_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_files_name_the_problem(tmp_path, fake):
    write_legacy(tmp_path / "w.pth", fake, {"0": ("FloatStorage", np.ones(100))}, {"a": ("0", 0, (100,), (1,))})
    raw = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "short.pth").write_bytes(raw[:-40])
    with pytest.raises(tl.TorchFileError, match="truncated"):
        tl.load_state_dict(tmp_path / "short.pth")
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + raw)
    with pytest.raises(tl.TorchFileError, match="zip"):
        tl.load_state_dict(tmp_path / "zip.pth")
    (tmp_path / "other.pth").write_bytes(pickle.dumps(12345, protocol=2) + raw)
    with pytest.raises(tl.TorchFileError, match="magic"):
        tl.load_state_dict(tmp_path / "other.pth")
