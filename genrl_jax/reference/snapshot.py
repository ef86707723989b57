"""Reading reference PyTorch snapshots without torch and without running code from them.

The reference (github.com/mazpie/genrl) saves whole agent objects with `torch.save`: a zip
archive holding `<top>/data.pkl` (a pickle naming the reference's classes) and one raw
storage per tensor, `<top>/data/<key>` (method.md §7.1; fixture README section 8). Unpickling it
normally imports the reference's code and runs whatever the pickle says. Here a restricted
unpickler rebuilds only tensors (numpy, from the storage records) and plain containers;
every other global becomes an inert stub class, whose instances merely record the state the
pickle gives them, so nothing from the file is imported or called. Globals that only an
attack would name (`os.system`, `builtins.eval`, ...) are refused outright with a clear
error, although their stubs would be inert too.

Parameters are then collected from the stub modules by their module path, exactly as
`nn.Module.state_dict()` orders them: own `_parameters` (skipping None), `_buffers` not in
`_non_persistent_buffers_set`, then `_modules` in order, joined with '.'.

Also read: plain state dicts saved with `torch.save` (an OrderedDict of tensors, bare or
under 'model' / 'module' as model checkpoints store them) and the fixtures' `.npz` layout
(`param/<key>` arrays, or bare keys).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

# Top-level submodules that a train.py run may register but that are not part of the
# model (`eval_imag_behavior` backs up the acting behaviour there).
SKIPPED_MODULES = ("_backup_acting_behavior",)

# Legacy typed storages (the type is the storage's dtype); `torch.cuda.*` in old files.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128, "UntypedStorage": np.uint8,
}
# `torch.<dtype>` globals, as `_rebuild_tensor_v3` names the tensor's dtype.
TORCH_DTYPES = {
    "float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16, "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64, "long": np.int64, "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16, "int8": np.int8, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}
# Modules (and their submodules) whose globals only an attack would name.
DENIED_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib",
                  "runpy", "code", "codeop", "pty", "ctypes", "multiprocessing", "pickle",
                  "_pickle", "marshal", "webbrowser", "signal", "threading", "asyncio",
                  "tempfile", "io", "_io", "pdb", "commands", "popen2")
DENIED_BUILTINS = ("eval", "exec", "compile", "open", "__import__", "setattr", "delattr",
                   "globals", "locals", "vars", "input", "breakpoint", "exit", "quit", "help",
                   "memoryview", "print", "type", "super", "classmethod", "staticmethod",
                   "property")
SAFE_BUILTINS = {"set": set, "frozenset": frozenset, "dict": dict, "list": list,
                 "tuple": tuple, "int": int, "long": int, "float": float, "bool": bool,
                 "str": str, "complex": complex}


class SnapshotError(ValueError):
  """A snapshot cannot be read safely, or holds something an import cannot use."""


@dataclasses.dataclass
class Snapshot:
  """What a snapshot file holds.

  Attributes:
    state_dict: torch key -> array in torch layout, in `state_dict()` order (for an agent:
      `wm.*`, `_acting_behavior.*`, `_imag_behavior.*`).
    metadata: plain values of a dict payload (`_global_step`, `_global_episode`,
      `wandb_run_id`) and `format` ('torch_agent', 'torch_state_dict' or 'npz').
    attributes: plain scalar attributes of the modules by path, e.g. `wm.rssm._discrete`.
    agent_config: the agent's `cfg` (an omegaconf config) as plain dicts and lists, best
      effort (empty when absent).
    ignored: paths of submodules that were skipped (`SKIPPED_MODULES`).
    path: the file read.
  """
  state_dict: dict[str, np.ndarray]
  metadata: dict[str, Any]
  attributes: dict[str, Any]
  agent_config: dict[str, Any]
  ignored: list[str]
  path: str


class _Stub:
  """An inert stand-in for a global of the file: records what the pickle gives it."""
  stub_name = "?"

  def __new__(cls, *args, **kwargs):
    obj = super().__new__(cls)
    obj.__dict__.update(stub_args=args, stub_state=None, stub_items=[])
    return obj

  def __init__(self, *args, **kwargs):
    pass

  def __setstate__(self, state):
    self.__dict__["stub_state"] = state

  def __setitem__(self, key, value):
    self.stub_items.append((key, value))

  def append(self, value):
    self.stub_items.append(value)

  def extend(self, values):
    self.stub_items.extend(values)

  def __call__(self, *args, **kwargs):
    return _Stub(*args)

  def __repr__(self):
    return f"<inert stub {self.stub_name}>"


def _stub_class(module: str, name: str) -> type:
  return type(name.rsplit(".", 1)[-1], (_Stub,), {"stub_name": f"{module}.{name}"})


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str
  dtype: Any


@dataclasses.dataclass(frozen=True)
class _DType:
  name: str
  dtype: Any


@dataclasses.dataclass(eq=False)
class _TensorRef:
  """A tensor of the archive, read from its storage record only when needed (so optimizer
  state is never materialised); hashable, as optimizer state is keyed by parameters."""
  reader: "_ArchiveReader"
  key: str
  storage_dtype: Any
  numel: int
  dtype: Any
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]

  def materialize(self) -> np.ndarray:
    raw = self.reader.storage_bytes(self.key, np.dtype(self.storage_dtype).itemsize * self.numel)
    flat = np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder(self.reader.byteorder))
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, flat.dtype.newbyteorder("="))
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if self.offset < 0 or min(self.stride, default=0) < 0 or last >= flat.size:
      raise SnapshotError(f"{self.reader.path}: tensor of shape {self.size}, stride "
                          f"{self.stride}, offset {self.offset} reaches past its storage "
                          f"{self.key!r} of {flat.size} elements (damaged archive?)")
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=[s * flat.itemsize for s in self.stride], writeable=False)
    return view.astype(flat.dtype.newbyteorder("="), copy=True)


def _ints(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) for v in value):
    raise SnapshotError(f"tensor {what} must be a tuple of ints, got {value!r}")
  return tuple(value)


class _ArchiveReader:
  """Storage records of one open torch zip archive (read once, shared by views)."""

  def __init__(self, path: str, archive: zipfile.ZipFile, top: str):
    self.path, self._zip, self._top = path, archive, top
    self._cache: dict[str, bytes] = {}
    order = f"{top}/byteorder"
    names = set(archive.namelist())
    self.byteorder = "<"
    if order in names and archive.read(order).strip() == b"big":
      self.byteorder = ">"

  def storage_bytes(self, key: str, nbytes: int) -> memoryview:
    if key not in self._cache:
      name = f"{self._top}/data/{key}"
      try:
        self._cache[key] = self._zip.read(name)
      except KeyError:
        raise SnapshotError(f"{self.path}: the archive has no storage record {name!r} "
                            "(truncated or damaged file)") from None
      except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SnapshotError(f"{self.path}: cannot read storage record {name!r}: {e}") from e
    raw = self._cache[key]
    if len(raw) < nbytes:
      raise SnapshotError(f"{self.path}: storage record {key!r} has {len(raw)} bytes, the "
                          f"pickle declares {nbytes} (truncated or damaged file)")
    return memoryview(raw)[:nbytes]  # a view: slicing bytes would copy the storage


def _rebuild_tensor(storage, offset, size, stride, dtype=None) -> _TensorRef:
  if not isinstance(storage, _StorageRecord):
    raise SnapshotError(f"a tensor is rebuilt from {storage!r}, not from a storage record")
  if not isinstance(offset, int):
    raise SnapshotError(f"tensor storage offset must be an int, got {offset!r}")
  size, stride = _ints(size, "size"), _ints(stride, "stride")
  if len(size) != len(stride) or min(size + stride, default=0) < 0:
    raise SnapshotError(f"tensor size {size} and stride {stride} do not describe a tensor")
  return _TensorRef(storage.reader, storage.key, storage.dtype, storage.numel,
                    storage.dtype if dtype is None else dtype, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
  """numpy stand-in for `torch._utils._rebuild_tensor_v2` (dtype = the storage's)."""
  del requires_grad, hooks, metadata
  return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
  """numpy stand-in for `torch._utils._rebuild_tensor_v3` (an untyped storage + dtype)."""
  del requires_grad, hooks, metadata
  if not isinstance(dtype, _DType):
    raise SnapshotError(f"tensor dtype {dtype!r} is not a known torch dtype")
  return _rebuild_tensor(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
  """`torch._utils._rebuild_parameter[_with_state]`: a parameter is its tensor here."""
  del requires_grad, hooks, state
  return data


@dataclasses.dataclass(frozen=True)
class _StorageRecord:
  reader: _ArchiveReader
  key: str
  dtype: Any
  numel: int


REBUILD_FUNCTIONS = {"_rebuild_tensor_v2": _rebuild_tensor_v2,
                     "_rebuild_tensor_v3": _rebuild_tensor_v3,
                     "_rebuild_parameter": _rebuild_parameter,
                     "_rebuild_parameter_with_state": _rebuild_parameter}


def _inert_dict(*args, **kwargs) -> dict:
  """`collections.defaultdict(factory)` without its factory (never called)."""
  del args, kwargs
  return {}


class _RestrictedUnpickler(pickle.Unpickler):
  """Rebuilds tensors and containers; every other global is an inert stub class."""

  def __init__(self, file, reader: _ArchiveReader):
    super().__init__(file)
    self._reader = reader
    self._stubs: dict[tuple[str, str], type] = {}

  def find_class(self, module: str, name: str) -> Any:
    full = f"{module}.{name}"
    if module in ("builtins", "__builtin__"):
      if name in SAFE_BUILTINS:
        return SAFE_BUILTINS[name]
      if name in DENIED_BUILTINS:
        raise SnapshotError(f"{self._reader.path}: refusing global {full} (a snapshot never "
                            "needs it; the file may be malicious). Nothing was executed.")
    elif module.split(".")[0] in DENIED_MODULES:
      raise SnapshotError(f"{self._reader.path}: refusing global {full} (a snapshot never "
                          "needs it; the file may be malicious). Nothing was executed.")
    elif module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    elif module == "collections" and name == "defaultdict":
      return _inert_dict
    elif module == "torch._utils" and name.startswith("_rebuild"):
      if name not in REBUILD_FUNCTIONS:
        raise SnapshotError(f"{self._reader.path}: unsupported tensor type ({full}); only "
                            "dense tensors and parameters can be imported")
      return REBUILD_FUNCTIONS[name]
    elif module in ("torch", "torch.cuda", "torch.storage") and name.endswith("Storage"):
      if name not in STORAGE_DTYPES:
        raise SnapshotError(f"{self._reader.path}: unknown tensor storage type {full}; "
                            f"supported: {sorted(STORAGE_DTYPES)}")
      return _StorageType(name, STORAGE_DTYPES[name])
    elif module == "torch" and name in TORCH_DTYPES:
      return _DType(name, TORCH_DTYPES[name])
    elif module == "torch" and name == "Size":
      return tuple
    key = (module, name)
    if key not in self._stubs:
      self._stubs[key] = _stub_class(module, name)
    return self._stubs[key]

  def persistent_load(self, pid: Any) -> _StorageRecord:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise SnapshotError(f"{self._reader.path}: unsupported persistent record {pid!r}")
    _, storage_type, key, _, numel = pid  # the device location does not matter here
    if not isinstance(storage_type, _StorageType):
      raise SnapshotError(f"{self._reader.path}: unknown tensor storage type {storage_type!r}")
    if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
      raise SnapshotError(f"{self._reader.path}: malformed storage record {pid!r}")
    return _StorageRecord(self._reader, key, storage_type.dtype, numel)


# --- collecting parameters ------------------------------------------------------------


def _module_state(obj: Any) -> dict | None:
  """The `nn.Module.__dict__` of a stub module, or None for anything else."""
  if not isinstance(obj, _Stub) or not isinstance(obj.stub_state, dict):
    return None
  state = obj.stub_state
  if all(isinstance(state.get(k), Mapping) for k in ("_parameters", "_buffers", "_modules")):
    return state
  return None


def _tensor(value: Any, key: str, path: str) -> np.ndarray:
  if not isinstance(value, _TensorRef):
    raise SnapshotError(f"{path}: {key} is not a tensor but {value!r}")
  return value.materialize()


def _collect(module_state: dict, prefix: str, out: dict, attributes: dict, ignored: list,
             path: str, active: tuple[int, ...] = ()) -> None:
  """Appends the module's state-dict entries to `out`, in `state_dict()` order."""
  if id(module_state) in active:
    raise SnapshotError(f"{path}: module {prefix.rstrip('.')} contains itself")
  active += (id(module_state),)
  for name, value in module_state["_parameters"].items():
    if value is not None:
      out[prefix + name] = _tensor(value, prefix + name, path)
  skip = module_state.get("_non_persistent_buffers_set") or set()
  for name, value in module_state["_buffers"].items():
    if value is not None and name not in skip:
      out[prefix + name] = _tensor(value, prefix + name, path)
  for name, value in module_state.items():
    if not name.startswith("__") and isinstance(value, (bool, int, float, str)):
      attributes[prefix + name] = value
  for name, child in module_state["_modules"].items():
    if child is None:
      continue
    if not prefix and name in SKIPPED_MODULES:
      ignored.append(name)
      continue
    child_state = _module_state(child)
    if child_state is None:
      raise SnapshotError(f"{path}: submodule {prefix + name} is {child!r}, not a module")
    _collect(child_state, f"{prefix}{name}.", out, attributes, ignored, path, active)


def _plain_config(obj: Any, depth: int = 0) -> Any:
  """An omegaconf node (stub) as plain values: `_content` of containers, `_val` of leaves."""
  if depth > 32:
    return None
  if isinstance(obj, (bool, int, float, str)) or obj is None:
    return obj
  if isinstance(obj, (list, tuple)):
    return [_plain_config(v, depth + 1) for v in obj]
  if isinstance(obj, Mapping):
    return {str(k): _plain_config(v, depth + 1) for k, v in obj.items()}
  if isinstance(obj, _Stub) and isinstance(obj.stub_state, dict):
    for field in ("_content", "_val"):
      if field in obj.stub_state:
        return _plain_config(obj.stub_state[field], depth + 1)
  return None


def _is_state_dict(payload: Any) -> bool:
  return (isinstance(payload, Mapping) and len(payload) > 0
          and all(isinstance(k, str) for k in payload)
          and all(isinstance(v, _TensorRef) for v in payload.values()))


def _from_payload(payload: Any, path: str) -> Snapshot:
  metadata: dict[str, Any] = {}
  if _is_state_dict(payload):
    state_dict = {k: v.materialize() for k, v in payload.items()}
    return Snapshot(state_dict, {"format": "torch_state_dict"}, {}, {}, [], path)
  # Model checkpoints (e.g. InternVideo2's): `{'model': state_dict}`, or deepspeed's
  # model-states layout `{'module': state_dict, ...}`; 'model' wins, as in the loaders.
  for container in ("model", "module"):
    if isinstance(payload, Mapping) and _is_state_dict(payload.get(container)):
      state_dict = {k: v.materialize() for k, v in payload[container].items()}
      return Snapshot(state_dict, {"format": "torch_state_dict", "container": container},
                      {}, {}, [], path)
  agent = payload
  if isinstance(payload, Mapping) and "agent" in payload:
    agent = payload["agent"]
    metadata = {str(k): v for k, v in payload.items()
                if isinstance(v, (bool, int, float, str)) or v is None}
  if _is_state_dict(agent):
    state_dict = {k: v.materialize() for k, v in agent.items()}
    return Snapshot(state_dict, {**metadata, "format": "torch_state_dict"}, {}, {}, [], path)
  state = _module_state(agent)
  if state is None:
    described = sorted(map(str, payload)) if isinstance(payload, Mapping) else repr(payload)
    raise SnapshotError(f"{path}: expected a pickled agent, a dict with 'agent' (train.py "
                        f"snapshot) or a state dict of tensors; found {described}")
  state_dict: dict[str, np.ndarray] = {}
  attributes: dict[str, Any] = {}
  ignored: list[str] = []
  _collect(state, "", state_dict, attributes, ignored, path)
  agent_config = _plain_config(state.get("cfg"))
  return Snapshot(state_dict, {**metadata, "format": "torch_agent"}, attributes,
                  agent_config if isinstance(agent_config, dict) else {}, ignored, path)


def _archive_top(archive: zipfile.ZipFile, path: str) -> str:
  """The archive's top folder (`archive` for recent torch, the file stem for older ones)."""
  tops = sorted({n.split("/")[0] for n in archive.namelist()
                 if n.count("/") == 1 and n.endswith("/data.pkl")})
  if len(tops) != 1:
    raise SnapshotError(f"{path}: expected one <folder>/data.pkl in the torch zip archive, "
                        f"found {len(tops)} (not a torch.save file?)")
  return tops[0]


def load_torch_archive(path: str) -> Snapshot:
  """Reads a torch zip archive (`torch.save` since torch 1.6) without torch.

  Args:
    path: a train.py snapshot (`{'agent': GenRLAgent, '_global_step', ...}`), a bare
      pickled agent (the released models), a plain state dict of tensors, or one under
      'model' or 'module' (deepspeed; `metadata['container']` says which). Tensors keep
      their stored dtype (e.g. `ml_dtypes.bfloat16`).
  Returns:
    The `Snapshot` (arrays in torch layouts).
  Raises:
    SnapshotError: not a zip archive, truncated or damaged, a missing storage record, an
      unsupported tensor or storage type, a refused global, or an unexpected payload.
  """
  path = os.fspath(path)
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise SnapshotError(f"{path} is not a readable torch zip archive (truncated file, or a "
                        f"legacy non-zip torch.save file?): {e}") from e
  except OSError as e:
    raise SnapshotError(f"cannot open snapshot {path}: {e}") from e
  with archive:
    top = _archive_top(archive, path)
    reader = _ArchiveReader(path, archive, top)
    try:
      with archive.open(f"{top}/data.pkl") as f:
        payload = _RestrictedUnpickler(f, reader).load()
      return _from_payload(payload, path)
    except SnapshotError:
      raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, TypeError,
            ValueError, AttributeError, IndexError, KeyError, RecursionError) as e:
      raise SnapshotError(f"{path}: cannot unpickle {top}/data.pkl (damaged file or an "
                          f"unexpected object): {type(e).__name__}: {e}") from e


def load_npz(path: str) -> Snapshot:
  """The fixtures' layout: `param/<key>` arrays (other entries ignored), or bare keys."""
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as z:
      files = list(z.files)
      params = [k for k in files if k.startswith("param/")]
      keys = params or files
      state_dict = {k[len("param/"):] if params else k: z[k] for k in keys}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise SnapshotError(f"cannot read {path} as an .npz state dict: {e}") from e
  return Snapshot(state_dict, {"format": "npz"}, {}, {}, [], path)


def load_snapshot(path: str) -> Snapshot:
  """A reference checkpoint of any supported kind: `.npz`, else a torch zip archive."""
  if os.fspath(path).endswith(".npz"):
    return load_npz(path)
  return load_torch_archive(path)
