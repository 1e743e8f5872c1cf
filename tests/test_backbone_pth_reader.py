"""The restricted reader of legacy PyTorch `.pth` files, on files this test writes byte by byte.

`write_legacy_pth` lays a state dict out as `torch.save(..., _use_new_zipfile_serialization=False)`
does (magic, protocol, sys info, the object pickle with storages as persistent ids, the sorted
storage keys, then each storage as an int64 element count and its raw little-endian bytes), with
the pickle opcodes written by hand, so no torch (and no pickling of torch globals) is needed.
"""

import collections
import os
import pickle
import struct

import numpy as np
import pytest

from fashionbert_tf.modeling.backbones import pth_reader

_STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage",
                  np.dtype("float16"): "HalfStorage", np.dtype("float64"): "DoubleStorage"}


def _unicode(text):
  data = text.encode("utf-8")
  return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
  return b"J" + struct.pack("<i", value)


def _global(module, name):
  return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int_tuple(values):
  return b"(" + b"".join(_int(v) for v in values) + b"t"


def _tensor_opcodes(storage_key, storage_name, numel, offset, shape, stride):
  """Opcodes of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, {})`."""
  storage_id = (b"(" + _unicode("storage") + _global("torch", storage_name) +
                _unicode(storage_key) + _unicode("cpu") + _int(numel) + b"N" + b"t" + b"Q")
  hooks = _global("collections", "OrderedDict") + b")R"
  return (_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage_id + _int(offset) +
          _int_tuple(shape) + _int_tuple(stride) + b"\x89" + hooks + b"t" + b"R")


def legacy_pth_bytes(entries, storages, extra_value_opcodes=None, storage_counts=None):
  """Bytes of a legacy `.pth` file.

  Args:
    entries: list of (name, storage key, offset, shape, stride): the state dict's tensors.
    storages: dict storage key -> 1-D np.ndarray (its dtype picks the storage type).
    extra_value_opcodes: optional (name, raw opcodes) put into the dict as one more entry.
    storage_counts: optional dict key -> element count written before the bytes (default: size).

  Returns:
    bytes.
  """
  body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
  for name, key, offset, shape, stride in entries:
    data = storages[key]
    body += _unicode(name) + _tensor_opcodes(key, _STORAGE_NAMES[data.dtype], data.size, offset,
                                             shape, stride) + b"s"
  if extra_value_opcodes is not None:
    body += _unicode(extra_value_opcodes[0]) + extra_value_opcodes[1] + b"s"
  # The state dict's `_metadata` attribute, as torch writes it (BUILD with a dict of dicts).
  body += b"}" + _unicode("_metadata") + b"}" + _unicode("") + b"}" + b"s" + b"s" + b"b"
  body += b"."
  keys = sorted(storages)
  out = pickle.dumps(pth_reader.MAGIC_NUMBER, protocol=2)
  out += pickle.dumps(pth_reader.PROTOCOL_VERSION, protocol=2)
  out += pickle.dumps({"protocol_version": pth_reader.PROTOCOL_VERSION, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
  out += body + pickle.dumps(keys, protocol=2)
  for key in keys:
    data = storages[key]
    count = data.size if storage_counts is None else storage_counts.get(key, data.size)
    out += struct.pack("<q", count) + data.astype(data.dtype.newbyteorder("<")).tobytes()
  return out


def write_legacy_pth(path, state_dict):
  """Writes dict name -> np.ndarray as a legacy `.pth`, one contiguous storage per tensor."""
  entries, storages = [], {}
  for index, (name, value) in enumerate(state_dict.items()):
    value = np.ascontiguousarray(value)
    key = str(1000 + index)
    storages[key] = value.reshape(-1)
    stride = [int(np.prod(value.shape[i + 1:])) for i in range(value.ndim)]
    entries.append((name, key, 0, value.shape, stride))
  with open(path, "wb") as f:
    f.write(legacy_pth_bytes(entries, storages))
  return path


def test_tensors_views_and_dtypes_come_back_exactly(tmp_path):
  rng = np.random.default_rng(0)
  shared = rng.standard_normal(30).astype(np.float32)
  counter = np.array([7], np.int64)
  half = rng.standard_normal(6).astype(np.float16)
  entries = [
      ("conv.weight", "140", 0, (2, 3, 5), (15, 5, 1)),   # contiguous
      ("conv.weight_t", "140", 0, (5, 3, 2), (1, 5, 15)),  # a transposed view of the same storage
      ("row", "140", 10, (5,), (1,)),                     # an offset into it
      ("bn.num_batches_tracked", "7", 0, (), ()),         # a 0-d int64 counter
      ("half", "99", 0, (2, 3), (3, 1)),
  ]
  path = tmp_path / "weights.pth"
  path.write_bytes(legacy_pth_bytes(entries, {"140": shared, "7": counter, "99": half}))
  state = pth_reader.read_legacy_pth(str(path))
  assert isinstance(state, collections.OrderedDict)
  assert list(state) == [name for name, *_ in entries]
  np.testing.assert_array_equal(state["conv.weight"], shared.reshape(2, 3, 5))
  np.testing.assert_array_equal(state["conv.weight_t"], shared.reshape(2, 3, 5).transpose())
  np.testing.assert_array_equal(state["row"], shared[10:15])
  assert state["bn.num_batches_tracked"].shape == () and state["bn.num_batches_tracked"] == 7
  assert state["bn.num_batches_tracked"].dtype == np.int64
  assert state["half"].dtype == np.float16
  np.testing.assert_array_equal(state["half"], half.reshape(2, 3))
  for value in state.values():
    assert value.flags.c_contiguous and value.flags.owndata


def test_write_then_read_round_trips_a_state_dict(tmp_path):
  rng = np.random.default_rng(1)
  state = {"a.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
           "a.bias": rng.standard_normal(4).astype(np.float32)}
  read = pth_reader.read_legacy_pth(write_legacy_pth(str(tmp_path / "w.pth"), state))
  assert list(read) == list(state)
  for name in state:
    np.testing.assert_array_equal(read[name], state[name])


def test_globals_outside_the_allow_list_are_refused_without_running(tmp_path):
  marker = tmp_path / "ran"
  attack = _global("posix", "system") + b"(" + _unicode(f"touch {marker}") + b"tR"
  data = legacy_pth_bytes([("x", "1", 0, (2,), (1,))], {"1": np.zeros(2, np.float32)},
                          extra_value_opcodes=("evil", attack))
  path = tmp_path / "evil.pth"
  path.write_bytes(data)
  with pytest.raises(pth_reader.PthFormatError, match=r"evil.pth.*global posix.system"):
    pth_reader.read_legacy_pth(str(path))
  assert not marker.exists()
  builtin = _global("builtins", "eval") + b"(" + _unicode("1 + 1") + b"tR"
  path.write_bytes(legacy_pth_bytes([], {}, extra_value_opcodes=("evil", builtin)))
  with pytest.raises(pth_reader.PthFormatError, match="builtins.eval"):
    pth_reader.read_legacy_pth(str(path))


def test_only_storage_persistent_ids_are_accepted(tmp_path):
  module_id = b"(" + _unicode("module") + _unicode("Net") + _unicode("net.py") + b"tQ"
  path = tmp_path / "module.pth"
  path.write_bytes(legacy_pth_bytes([], {}, extra_value_opcodes=("net", module_id)))
  with pytest.raises(pth_reader.PthFormatError, match="unsupported persistent id.*module"):
    pth_reader.read_legacy_pth(str(path))


def test_damaged_and_foreign_files_are_named(tmp_path):
  good = legacy_pth_bytes([("x", "1", 0, (4,), (1,))], {"1": np.arange(4, dtype=np.float32)})
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(good[:-3])
  with pytest.raises(pth_reader.PthFormatError, match=r"truncated.pth: truncated in storage '1'"):
    pth_reader.read_legacy_pth(str(truncated))
  wrong_count = tmp_path / "count.pth"
  wrong_count.write_bytes(legacy_pth_bytes([("x", "1", 0, (4,), (1,))],
                                           {"1": np.arange(4, dtype=np.float32)},
                                           storage_counts={"1": 5}))
  with pytest.raises(pth_reader.PthFormatError, match="holds 5 elements, its id says 4"):
    pth_reader.read_legacy_pth(str(wrong_count))
  out_of_range = tmp_path / "range.pth"
  out_of_range.write_bytes(legacy_pth_bytes([("x", "1", 2, (4,), (1,))],
                                            {"1": np.arange(4, dtype=np.float32)}))
  with pytest.raises(pth_reader.PthFormatError, match="reaches element 5 of a storage of 4"):
    pth_reader.read_legacy_pth(str(out_of_range))
  zipped = tmp_path / "zip.pth"
  zipped.write_bytes(b"PK\x03\x04" + b"\0" * 40)
  with pytest.raises(pth_reader.PthFormatError, match="zip-format"):
    pth_reader.read_legacy_pth(str(zipped))
  plain = tmp_path / "plain.pth"
  plain.write_bytes(pickle.dumps({"x": 1}, protocol=2))
  with pytest.raises(pth_reader.PthFormatError, match="wrong magic number"):
    pth_reader.read_legacy_pth(str(plain))
  with pytest.raises(FileNotFoundError, match="no_such.pth"):
    pth_reader.read_legacy_pth(os.path.join(str(tmp_path), "no_such.pth"))
