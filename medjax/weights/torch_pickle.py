"""Reads PyTorch state dicts (``torch.save`` files) into numpy, without torch and safely.

``torch.save`` writes a pickle, and unpickling runs whatever callable the file names:
loading an untrusted ``.pth`` with plain :mod:`pickle` (or ``torch.load`` without
``weights_only``) is arbitrary code execution. A state dict needs only a handful of
globals, so :class:`_RestrictedUnpickler` resolves exactly those and refuses anything
else *before* it is called -- the refusal names the file and the global.

Both containers are read:

* the zip format (torch >= 1.6 default): ``<archive>/data.pkl`` whose persistent ids
  ``('storage', storage_type, key, location, numel)`` refer to raw little-endian bytes in
  ``<archive>/data/<key>`` (``<archive>`` is ``archive`` or the saved file's stem);
* the legacy format (``_use_new_zipfile_serialization=False``, and what older releases
  such as the EfficientNet-Lite0 checkpoint ship): five back-to-back pickles -- magic
  number, protocol version, sys_info, the object (persistent ids
  ``('storage', storage_type, key, location, numel, view_metadata)``), the list of storage
  keys -- followed, per key in that order, by an 8-byte little-endian element count and
  the storage's raw bytes.

torch itself is not imported: it is only a test peer, and a file reader should not need
a 800 MB dependency.
"""
import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch storage class name -> element dtype. ``UntypedStorage`` holds bytes.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
    "UntypedStorage": np.uint8,
}


class UnsafePickleError(pickle.UnpicklingError):
  """The file names a global a state dict never needs; nothing from it was called."""


class _StorageType:
  """Stands in for ``torch.<X>Storage``: only its element dtype matters here."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
  """A flat typed buffer; filled after unpickling in the legacy format."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = dtype
    self.numel = numel
    self.data: np.ndarray | None = None


class _Tensor:
  """A tensor whose storage may not be read yet (legacy format stores data after the
  object pickle), so materialisation is deferred to :func:`_materialise`."""

  def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def to_numpy(self) -> np.ndarray:
    flat = self.storage.data
    itemsize = flat.dtype.itemsize
    if len(self.size) != len(self.stride) or min((self.offset, *self.size, *self.stride),
                                                  default=0) < 0:
      raise ValueError(f"invalid tensor geometry: size {self.size} stride {self.stride} "
                       f"offset {self.offset}")
    # Bounds-checked before as_strided, which would otherwise read outside the buffer.
    needed = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if all(self.size) and needed > flat.size:
      raise ValueError(f"tensor of size {self.size} stride {self.stride} at offset "
                       f"{self.offset} overruns its storage of {flat.size} elements")
    numel = int(np.prod(self.size))
    contiguous = all(s == int(np.prod(self.size[i + 1:])) for i, s in enumerate(self.stride)
                     if self.size[i] > 1)
    if self.offset == 0 and numel == flat.size and contiguous:
      return flat.reshape(self.size)  # the common case: one tensor per storage, no copy.
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride])
    return np.array(view)  # a view into a shared storage: own the memory.


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata  # autograd state, irrelevant for weights.
  if not isinstance(storage, _Storage):
    raise UnsafePickleError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): tuple,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals a state dict is made of."""

  def __init__(self, file, source: str, persistent_load=None):
    super().__init__(file)
    self._source = source
    self._persistent = persistent_load

  def find_class(self, module: str, name: str):
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafePickleError(
        f"{self._source}: refusing to load global {module}.{name}: a PyTorch state dict "
        f"only needs tensors in (Ordered)dicts; this file would call other code. Load only "
        f"state dicts (model.state_dict()), not pickled models or objects.")

  def persistent_load(self, pid):
    if self._persistent is None:
      raise UnsafePickleError(f"{self._source}: unexpected persistent id {pid!r}")
    return self._persistent(pid)


def _materialise(obj: Any) -> Any:
  if isinstance(obj, _Tensor):
    return obj.to_numpy()
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v) for v in obj)
  return obj


def _flatten_state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
  """Returns the name -> array mapping; accepts the common ``{"state_dict": {...}}``
  checkpoint wrapper (training scripts save it so) and ignores non-tensor entries
  such as ``_metadata`` attributes."""
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise ValueError(f"{source}: expected a state dict (a mapping of names to tensors), "
                     f"found {type(obj).__name__}")
  out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
  if not out:
    raise ValueError(f"{source}: the pickled mapping holds no tensors")
  return out


def _storage_dtype(storage_type: Any, source: str) -> np.dtype:
  if not isinstance(storage_type, _StorageType):
    raise UnsafePickleError(f"{source}: storage type {storage_type!r} is not a torch storage")
  return storage_type.dtype


def _read_array(f, dtype: np.dtype, numel: int, big_endian: bool, what: str) -> np.ndarray:
  """Reads ``numel`` elements straight into a new array (no intermediate bytes copy:
  checkpoints are hundreds of MB)."""
  data = np.empty(numel, dtype=dtype.newbyteorder(">") if big_endian else dtype)
  buffer, got = data.view(np.uint8), 0
  while got < data.nbytes:
    n = f.readinto(buffer[got:])
    if not n:
      raise ValueError(f"{what} truncated ({got} of {data.nbytes} bytes)")
    got += n
  return data.astype(dtype, copy=False) if big_endian else data


def _open_record(zf: zipfile.ZipFile, name: str):
  """A file positioned at a record's bytes. torch stores records uncompressed; those are
  read straight from the archive file, skipping ``ZipExtFile``'s per-byte CRC pass that
  doubles the load time of large checkpoints."""
  info = zf.getinfo(name)
  if info.compress_type != zipfile.ZIP_STORED:
    return zf.open(info)
  f = open(zf.filename, "rb")
  f.seek(info.header_offset)
  header = f.read(30)
  if header[:4] != b"PK\x03\x04":
    f.close()
    raise ValueError(f"{zf.filename}: corrupt zip local header for {name!r}")
  name_len, extra_len = struct.unpack("<HH", header[26:30])
  f.seek(info.header_offset + 30 + name_len + extra_len)
  return f


def _load_zip(path: str, zf: zipfile.ZipFile) -> Any:
  names = zf.namelist()
  pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pkl) != 1:
    raise ValueError(f"{path}: zip archive without a single '<archive>/data.pkl' record; "
                     f"is it a torch.save file? (found {names[:5]}...)")
  prefix = pkl[0][:-len("data.pkl")]
  big_endian = (prefix + "byteorder" in names and
                zf.read(prefix + "byteorder").decode().strip() == "big")
  storages: dict[str, _Storage] = {}

  def persistent_load(pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafePickleError(f"{path}: unexpected persistent id {pid!r}")
    _, storage_type, key, _location, numel = pid
    dtype = _storage_dtype(storage_type, path)
    if key not in storages:
      record = f"{prefix}data/{key}"
      if record not in names:
        raise ValueError(f"{path}: storage record {record!r} is missing")
      size = zf.getinfo(record).file_size
      if size != int(numel) * dtype.itemsize:
        raise ValueError(f"{path}: storage record {record!r} holds {size} bytes, not "
                         f"{numel} x {dtype.itemsize}")
      st = _Storage(dtype, int(numel))
      with _open_record(zf, record) as f:
        st.data = _read_array(f, dtype, int(numel), big_endian, f"{path}:{record}")
      storages[key] = st
    return storages[key]

  with zf.open(pkl[0]) as f:
    obj = _RestrictedUnpickler(io.BytesIO(f.read()), path, persistent_load).load()
  return _materialise(obj)


def _load_legacy(path: str, f: io.BufferedIOBase) -> Any:
  def plain_load():
    return _RestrictedUnpickler(f, path).load()

  try:
    magic = plain_load()
  except UnsafePickleError:
    raise
  except Exception as e:
    raise ValueError(f"{path}: neither a zip nor a legacy torch.save file ({e})") from e
  if magic != _LEGACY_MAGIC:
    raise ValueError(f"{path}: not a torch.save file (bad legacy magic number {magic!r})")
  protocol = plain_load()
  if protocol != _LEGACY_PROTOCOL:
    raise ValueError(f"{path}: unsupported legacy torch protocol {protocol!r}")
  sys_info = plain_load()
  little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
  storages: dict[str, _Storage] = {}
  views: list[tuple[_Storage, str, int]] = []

  def persistent_load(pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise UnsafePickleError(f"{path}: unexpected persistent id {pid!r} (only tensor "
                              f"storages are allowed, not pickled modules)")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) == 6 else None
    dtype = _storage_dtype(storage_type, path)
    if key not in storages:
      storages[key] = _Storage(dtype, int(numel))
    if view is None:
      return storages[key]
    view_key, offset, view_size = view
    if view_key not in storages:
      storages[view_key] = _Storage(dtype, int(view_size))
      views.append((storages[view_key], key, int(offset)))
    return storages[view_key]

  obj = _RestrictedUnpickler(f, path, persistent_load).load()
  keys = plain_load()
  for key in keys:
    st = storages[key]
    header = f.read(8)
    if len(header) != 8:
      raise ValueError(f"{path}: truncated before storage {key!r}")
    (numel,) = struct.unpack("<q", header)
    st.data = _read_array(f, st.dtype, numel, not little, f"{path}: storage {key!r}")
  for view_storage, root_key, offset in views:
    view_storage.data = storages[root_key].data[offset:offset + view_storage.numel]
  return _materialise(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a ``torch.save``'d state dict (zip or legacy format) as name -> numpy array.

  Raises :class:`UnsafePickleError` (naming the file and the global) when the pickle
  references anything beyond the tensors/OrderedDict a state dict is built from.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"PyTorch weights file not found: {path}")
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      obj = _load_zip(path, zf)
  else:
    with open(path, "rb") as f:
      obj = _load_legacy(path, f)
  return _flatten_state_dict(obj, path)
