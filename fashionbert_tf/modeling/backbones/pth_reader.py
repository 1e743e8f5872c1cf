"""Reads PyTorch's legacy (non-zip) `.pth` state dicts into NumPy arrays, without PyTorch or pickle code.

`torch.save(..., _use_new_zipfile_serialization=False)` (and every `torch.save` before PyTorch 1.6)
writes one stream:

  1. pickle: the magic number 0x1950a86a20f9469cfc6c
  2. pickle: the protocol version, 1001
  3. pickle: sys info {"protocol_version", "little_endian", "type_sizes"}
  4. pickle: the object itself (here a state dict: `collections.OrderedDict` name -> tensor). Each
     tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
     requires_grad, backward_hooks)`, and each storage is a persistent id
     ("storage", torch.<Type>Storage, key, location, numel, view_metadata): the bytes come later.
  5. pickle: the list of storage keys, in the order the storages follow
  6. per key: int64 little-endian element count, then count * element_size raw little-endian bytes.

Pickle (4) is parsed by a `pickle.Unpickler` whose `find_class` resolves only an allow-list of
names, each to a stand-in of ours that records what to build (no PyTorch object, no code from the
file runs); any other global, and any persistent id that is not a storage, raises
`PthFormatError`. Tensors are then cut from the storages with their offset, shape and strides and
copied into C-contiguous arrays. The zip format (PyTorch >= 1.6's default) is detected and refused
with a clear error.
"""

import collections
import io
import os
import pickle

import numpy as np

MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
PROTOCOL_VERSION = 1001

# torch.<Name>Storage -> the NumPy dtype of its elements (little-endian on disk).
STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class PthFormatError(ValueError):
  """The file is not a legacy PyTorch state dict this reader accepts (the message says why)."""


class _StorageType:
  """Stand-in for `torch.<Name>Storage`: only its element dtype matters."""

  def __init__(self, name):
    self.name = name
    self.dtype = STORAGE_DTYPES[name]


class _StorageRef:
  """A storage named by a persistent id; its bytes are read after the object pickle."""

  def __init__(self, key, storage_type, numel):
    self.key = key
    self.storage_type = storage_type
    self.numel = numel


class _TensorRef:
  """What `_rebuild_tensor_v2` would build: a strided view into a storage."""

  def __init__(self, storage, offset, shape, stride):
    self.storage = storage
    self.offset = offset
    self.shape = shape
    self.stride = stride


def _int_tuple(value, what):
  if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
    raise PthFormatError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
  return value


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  """Stand-in for `torch._utils._rebuild_tensor_v2`: checks the arguments, returns a `_TensorRef`."""
  del requires_grad, backward_hooks, metadata  # Training state, not values.
  if not isinstance(storage, _StorageRef):
    raise PthFormatError(f"tensor storage must be a persistent storage id, got {type(storage)}")
  if not isinstance(storage_offset, int) or storage_offset < 0:
    raise PthFormatError(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
  size = _int_tuple(size, "size")
  stride = _int_tuple(stride, "stride")
  if len(size) != len(stride):
    raise PthFormatError(f"tensor size {size} and stride {stride} differ in length")
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
  if last >= storage.numel:
    raise PthFormatError(
        f"tensor of size {size}, stride {stride} at offset {storage_offset} reaches element "
        f"{last} of a storage of {storage.numel} elements")
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  """Stand-in for `torch._utils._rebuild_parameter`: an `nn.Parameter` is its data."""
  del requires_grad, backward_hooks
  if not isinstance(data, _TensorRef):
    raise PthFormatError(f"parameter data must be a tensor, got {type(data)}")
  return data


# (module, name) -> stand-in. Nothing else in a pickle resolves.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED_GLOBALS`; persistent ids must be storages."""

  def __init__(self, file, source):
    super().__init__(file)
    self._source = source
    self.storages = {}  # key -> _StorageRef

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise PthFormatError(
          f"{self._source}: the pickle needs global {module}.{name}, which this reader does not "
          f"allow (only a state dict of tensors is read; allowed: "
          f"{', '.join(sorted(m + '.' + n for m, n in _ALLOWED_GLOBALS))})") from None

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 + (len(pid) > 5) and pid[0] == "storage"):
      raise PthFormatError(f"{self._source}: unsupported persistent id {pid!r:.200} (only "
                           f"tensor storages are read, not pickled modules)")
    _, storage_type, key, _, numel = pid[:5]
    view_metadata = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
      raise PthFormatError(f"{self._source}: storage {key!r} has type {storage_type!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise PthFormatError(f"{self._source}: malformed storage id {pid!r:.200}")
    if view_metadata is not None:
      raise PthFormatError(f"{self._source}: storage views (storage {key!r}) are not supported")
    known = self.storages.get(key)
    if known is None:
      known = self.storages[key] = _StorageRef(key, storage_type, numel)
    elif known.storage_type is not storage_type or known.numel != numel:
      raise PthFormatError(f"{self._source}: storage {key!r} is declared twice, differently")
    return known


def _load_plain(stream, source, what):
  """Loads one of the small header pickles (numbers, dicts, lists of str: no globals)."""
  try:
    return _RestrictedUnpickler(stream, source).load()
  except PthFormatError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise PthFormatError(f"{source}: cannot read the {what} ({type(e).__name__}: {e})") from None


def _to_arrays(obj, storages):
  """Replaces each `_TensorRef` in a (nested) dict / list / tuple by its NumPy array."""
  if isinstance(obj, _TensorRef):
    data = storages[obj.storage.key]
    itemsize = data.dtype.itemsize
    if not all(obj.shape):
      return np.zeros(obj.shape, data.dtype)
    view = np.lib.stride_tricks.as_strided(
        data[obj.offset:], shape=obj.shape, strides=[s * itemsize for s in obj.stride],
        writeable=False)
    # A copy: the result owns its memory instead of pinning the whole file's bytes.
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C", copy=True)
  if isinstance(obj, dict):
    return collections.OrderedDict((k, _to_arrays(v, storages)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_arrays(v, storages) for v in obj)
  return obj


def read_legacy_pth(path):
  """Reads a legacy-format `.pth` file holding a state dict.

  Args:
    path: the file (e.g. `efficientnet-lite0-57934424.pth`).

  Returns:
    `collections.OrderedDict` name -> np.ndarray (C-contiguous, native byte order, the storage's
    dtype: float32 for `FloatStorage`, int64 for `LongStorage`, ...), in the file's order.

  Raises:
    FileNotFoundError: `path` does not exist.
    PthFormatError: a zip-format file, a wrong magic number or protocol, a big-endian file, a global
      outside the allow-list, a non-storage persistent id, a missing or truncated storage (the
      message names the file and what is wrong).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"PyTorch weights file not found: {path}")
  with open(path, "rb") as f:
    data = f.read()
  return read_legacy_pth_bytes(data, source=path)


def read_legacy_pth_bytes(data, source="<bytes>"):
  """`read_legacy_pth` on the file's bytes; `source` names it in errors."""
  if data[:4] == b"PK\x03\x04":
    raise PthFormatError(
        f"{source}: a zip-format PyTorch file (torch.save's default since 1.6); this reader reads "
        f"only the legacy format (torch.save(..., _use_new_zipfile_serialization=False))")
  stream = io.BytesIO(data)
  if _load_plain(stream, source, "magic number") != MAGIC_NUMBER:
    raise PthFormatError(f"{source}: not a legacy PyTorch file (wrong magic number)")
  protocol = _load_plain(stream, source, "protocol version")
  if protocol != PROTOCOL_VERSION:
    raise PthFormatError(f"{source}: unsupported PyTorch file protocol {protocol!r} "
                         f"(expected {PROTOCOL_VERSION})")
  sys_info = _load_plain(stream, source, "sys info")
  if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
    raise PthFormatError(f"{source}: only little-endian files are supported (sys info "
                         f"{sys_info!r:.200})")

  unpickler = _RestrictedUnpickler(stream, source)
  try:
    result = unpickler.load()
  except PthFormatError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise PthFormatError(
        f"{source}: cannot read the pickled object ({type(e).__name__}: {e})") from None

  keys = _load_plain(stream, source, "storage key list")
  if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
    raise PthFormatError(f"{source}: the storage key list is malformed")
  missing = sorted(set(unpickler.storages) - set(keys))
  if missing:
    raise PthFormatError(f"{source}: storages {missing[:5]} are used but not stored")

  view = memoryview(data)
  position = stream.tell()
  storages = {}
  for key in keys:
    if key not in unpickler.storages:
      raise PthFormatError(f"{source}: storage {key!r} is stored but no tensor uses it")
    ref = unpickler.storages[key]
    if position + 8 > len(data):
      raise PthFormatError(f"{source}: truncated before storage {key!r}")
    numel = int.from_bytes(view[position:position + 8], "little", signed=True)
    position += 8
    if numel != ref.numel:
      raise PthFormatError(f"{source}: storage {key!r} holds {numel} elements, its id says "
                           f"{ref.numel}")
    nbytes = numel * ref.storage_type.dtype.itemsize
    if position + nbytes > len(data):
      raise PthFormatError(f"{source}: truncated in storage {key!r} ({nbytes} bytes expected, "
                           f"{len(data) - position} left)")
    storages[key] = np.frombuffer(data, ref.storage_type.dtype, count=numel, offset=position)
    position += nbytes
  if position != len(data):
    raise PthFormatError(f"{source}: {len(data) - position} unexpected bytes after the storages")

  state_dict = _to_arrays(result, storages)
  if not isinstance(state_dict, dict):
    raise PthFormatError(f"{source}: holds a {type(result).__name__}, not a state dict")
  return state_dict
