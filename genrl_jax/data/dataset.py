"""Episode datasets: TFDS in the RLDS convention, ArrayRecord shards, VLM embedding shards.

Layout of a dataset folder (`config.data.path`)::

  dataset.json                      what every episode shares: domain, action spec, frame size
  episodes/shard-00000/             a TFDS dataset folder (dataset_info.json, features.json,
                                    metadata.json, genrl_episodes-train.array_record-00000)
  embeddings/<vlm>/shard-00000/     the VLM embeddings of the episodes of that shard

An episode record is `{'episode_id': int64, 'steps': {observation, action, reward, discount,
is_first, is_last, is_terminal}}` (RLDS); an embedding record is `{'episode_id',
'vlm_embedding': (T, E) float32}`, row t embedding the 8 frames ending at step t. A shard's
TFDS metadata names the domain, action spec, collector, episode ids and lengths (and, for
embeddings, the VLM identifier, embedding dim and clip length), so the sampler never reads
frames to plan a batch.

Shards are written into a temporary folder (`genrl_jax.files.write_directory`, a name
ending in `.tmp`) and renamed when complete: a crash leaves no half-written shard that reads
as valid, and the next writer removes the leftovers.
Embeddings are added later as separate shards, one per episode shard, without rewriting
frames; embeddings of several VLMs can coexist. ArrayRecord checksums every chunk, so a
corrupted or truncated shard fails on read (with the file named) instead of yielding bad data.
Reading needs no TensorFlow (`as_data_source`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import threading
from typing import Any, Iterator, Mapping

import numpy as np

from genrl_jax import files
from genrl_jax.data import episodes as episodes_lib
from genrl_jax.data.episodes import DatasetError, Episode

FORMAT_VERSION = 1
EPISODES_DIR = "episodes"
EMBEDDINGS_DIR = "embeddings"
SPEC_FILE = "dataset.json"
TFDS_NAME = "genrl_episodes"
TFDS_EMBEDDING_NAME = "genrl_embeddings"
_SHARD_RE = re.compile(r"^shard-(\d{5,})$")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What every episode of a dataset shares. Actions lie in [-1, 1] (spec 9.1)."""
  domain: str
  action_dim: int
  image_size: int = 64


def embedding_key(identifier: str) -> str:
  """The folder name of a VLM's embeddings (`openai/clip-vit-b` -> `openai--clip-vit-b`)."""
  key = re.sub(r"[^A-Za-z0-9._-]", "-", identifier.replace("/", "--"))
  if not key.strip(".-"):
    raise ValueError(f"VLM identifier {identifier!r} gives no usable folder name")
  return key


# TFDS resolves its modules lazily (etils LazyModule, whose cached_property holds a lock
# on Python 3.11). Two reader threads touching TFDS for the first time at once (a grain
# worker process's prefetch threads) can deadlock: one holds that lock waiting for the
# import lock of a module the other is importing, which in turn waits for that lock. So
# the first import and every shard opening (which resolves more lazy modules) go through
# this one lock.
_TFDS_LOCK = threading.RLock()


def _tfds():
  with _TFDS_LOCK:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return tfds


def _episode_features(spec: DatasetSpec):
  f = _tfds().features
  # BYTES encoding: raw arrays, ~30x faster to write and 15x faster to read than the
  # default (platform notes).
  tensor = lambda shape, dtype: f.Tensor(shape=shape, dtype=dtype, encoding=f.Encoding.BYTES)
  size = spec.image_size
  return f.FeaturesDict({
      "episode_id": f.Scalar(dtype=np.int64),
      "steps": f.Dataset({
          "observation": tensor((size, size, 3), np.uint8),
          "action": tensor((spec.action_dim,), np.float32),
          "reward": f.Scalar(dtype=np.float32),
          "discount": f.Scalar(dtype=np.float32),
          "is_first": f.Scalar(dtype=np.bool_),
          "is_last": f.Scalar(dtype=np.bool_),
          "is_terminal": f.Scalar(dtype=np.bool_),
      }),
  })


def _embedding_features(embed_dim: int):
  f = _tfds().features
  return f.FeaturesDict({
      "episode_id": f.Scalar(dtype=np.int64),
      "vlm_embedding": f.Tensor(shape=(None, embed_dim), dtype=np.float32,
                                encoding=f.Encoding.BYTES),
  })


def _write_tfds_shard(final: str, name: str, features, metadata: dict,
                      records: list[dict]) -> None:
  """Writes `records` as the one-file TFDS dataset `final` (which must not exist), made in
  a temporary folder and renamed when complete (an atomic rename on one filesystem)."""
  tfds = _tfds()

  def fill(folder: str) -> None:
    identity = tfds.core.DatasetIdentity(name=name, version=tfds.core.Version("1.0.0"),
                                         data_dir=folder, module_name="genrl_jax.data.dataset")
    info = tfds.core.DatasetInfo(builder=identity, features=features,
                                 metadata=tfds.core.MetadataDict(metadata))
    writer = tfds.core.SequentialWriter(info, max_examples_per_shard=len(records) + 1,
                                        file_format="array_record")
    writer.initialize_splits(["train"])
    writer.add_examples({"train": records})
    writer.close_all()
    if os.path.exists(final):
      raise DatasetError(f"{final} already exists; nothing was overwritten")

  files.write_directory(final, fill)


def _shard_names(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    return []
  return sorted(n for n in os.listdir(folder) if _SHARD_RE.match(n))


def _remove_leftovers(folder: str) -> None:
  """Removes the temporary shard folders left by an interrupted writer (never complete
  shards)."""
  if os.path.isdir(folder):
    for name in os.listdir(folder):
      if name.endswith(files.TEMP_SUFFIX):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _remove_orphan_embeddings(root: str) -> None:
  """Removes what a crash between writing a shard's embeddings and its episodes left."""
  shards = set(_shard_names(os.path.join(root, EPISODES_DIR)))
  folder = os.path.join(root, EMBEDDINGS_DIR)
  for key in os.listdir(folder) if os.path.isdir(folder) else []:
    _remove_leftovers(os.path.join(folder, key))
    for name in _shard_names(os.path.join(folder, key)):
      if name not in shards:
        shutil.rmtree(os.path.join(folder, key, name))


def read_spec(root: str) -> DatasetSpec:
  path = os.path.join(root, SPEC_FILE)
  if not os.path.exists(path):
    hint = ""
    if os.path.isdir(root) and any(n.endswith(".npz") for n in os.listdir(root)):
      hint = (" It holds .npz episode files: convert them with `python -m genrl_jax "
              f"import-npz {root} --out <dataset folder>`.")
    raise DatasetError(f"{root} is not a genrl_jax dataset (no {SPEC_FILE}).{hint}")
  try:
    with open(path) as f:
      raw = json.load(f)
    if raw.pop("format_version") != FORMAT_VERSION:
      raise DatasetError(f"{path}: format version is not {FORMAT_VERSION}")
    return DatasetSpec(**raw)
  except (KeyError, TypeError, json.JSONDecodeError) as e:
    raise DatasetError(f"{path}: cannot be read as a dataset spec ({e!r})") from e


def create_or_check(root: str, spec: DatasetSpec) -> None:
  """Creates an empty dataset at `root`, or checks that the one there has `spec`."""
  if os.path.exists(os.path.join(root, SPEC_FILE)):
    have = read_spec(root)
    if have != spec:
      raise DatasetError(f"{root} holds a dataset of {have}; this writer has {spec}. Use "
                         "another data path.")
    return
  os.makedirs(os.path.join(root, EPISODES_DIR), exist_ok=True)
  files.write_json(os.path.join(root, SPEC_FILE),
                   dict(dataclasses.asdict(spec), format_version=FORMAT_VERSION), sort_keys=False)


def existing_episode_ids(root: str) -> set[int]:
  """Ids of the episodes of the dataset at `root` (empty if there is none yet)."""
  if not os.path.exists(os.path.join(root, SPEC_FILE)):
    return set()
  return set(open_dataset(root, allow_empty=True).episode_ids.tolist())


@contextlib.contextmanager
def _writer_lock(root: str) -> Iterator[None]:
  """One writer per dataset at a time (released by the OS if the writer dies)."""
  with open(os.path.join(root, ".writer.lock"), "w") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise DatasetError(f"another process is writing to the dataset {root}") from e
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class EpisodeWriter:
  """Appends episodes to a dataset, `episodes_per_shard` to a shard.

  Use as a context manager: on leaving (also through an exception or Ctrl-C) the episodes
  still buffered are written as a last shard, so finished episodes are kept. Episodes may
  carry `vlm_embedding`; then `vlm` (the identifier of the VLM that made them) and
  `n_frames` must be given and the embeddings go to that VLM's embedding shards.
  """

  def __init__(self, root: str, spec: DatasetSpec, episodes_per_shard: int = 16,
               source: Mapping[str, Any] | None = None, vlm: str | None = None,
               n_frames: int = 8):
    if episodes_per_shard < 1:
      raise ValueError(f"episodes_per_shard={episodes_per_shard} must be at least 1")
    self.root, self.spec = root, spec
    self.episodes_per_shard = episodes_per_shard
    self.source = dict(source or {})
    self.vlm, self.n_frames = vlm, n_frames
    self._buffer: list[tuple[int, Episode]] = []
    self._lock = None
    create_or_check(root, spec)
    existing = open_dataset(root, allow_empty=True)
    self._ids = set(existing.episode_ids.tolist())
    # Embeddings of one VLM have one size: fixed by those already written, else the first.
    have = existing.embedding_sets.get(vlm) if vlm is not None else None
    self._embed_dim = have.embed_dim if have else None

  def __enter__(self) -> "EpisodeWriter":
    self._lock = _writer_lock(self.root)
    self._lock.__enter__()
    _remove_leftovers(os.path.join(self.root, EPISODES_DIR))
    _remove_orphan_embeddings(self.root)
    return self

  def __exit__(self, *exc) -> None:
    try:
      self.flush()
    finally:
      self._lock.__exit__(*exc)
      self._lock = None

  @property
  def episode_ids(self) -> set[int]:
    """Ids of the episodes written or buffered so far."""
    return set(self._ids)

  def add(self, episode: Mapping[str, np.ndarray], episode_id: int | None = None,
          where: str | None = None) -> int:
    """Buffers one episode (checked now); writes a shard when the buffer is full.

    Returns the episode's id (default: one more than the largest so far). `where` names
    the episode's origin (e.g. a file) in errors.
    """
    if self._lock is None:
      raise RuntimeError("use EpisodeWriter as a context manager (`with EpisodeWriter(...)`)")
    episode_id = max(self._ids, default=-1) + 1 if episode_id is None else int(episode_id)
    where = where or f"episode {episode_id} for {self.root}"
    if episode_id in self._ids:
      raise DatasetError(f"{where}: the dataset already has an episode with this id")
    episodes_lib.check_episode(episode, where, self.spec.image_size, self.spec.action_dim)
    if (episodes_lib.EMBEDDING_KEY in episode) != (self.vlm is not None):
      raise DatasetError(f"{where}: episodes carry 'vlm_embedding' exactly when the writer "
                         f"is given the VLM identifier (vlm={self.vlm!r})")
    if self.vlm is not None:
      dim = np.shape(episode[episodes_lib.EMBEDDING_KEY])[1]
      if self._embed_dim is not None and dim != self._embed_dim:
        raise DatasetError(f"{where}: 'vlm_embedding' has dimension {dim}; the dataset's "
                           f"embeddings of {self.vlm!r} have {self._embed_dim}")
      self._embed_dim = dim
    self._buffer.append((episode_id, episodes_lib.cast_episode(episode)))
    self._ids.add(episode_id)
    if len(self._buffer) >= self.episodes_per_shard:
      self.flush()
    return episode_id

  def flush(self) -> str | None:
    """Writes the buffered episodes as one shard; returns its name (None if none)."""
    if not self._buffer:
      return None
    buffer, self._buffer = self._buffer, []
    episodes_dir = os.path.join(self.root, EPISODES_DIR)
    names = _shard_names(episodes_dir)
    name = f"shard-{int(names[-1][6:]) + 1 if names else 0:05d}"
    ids = [i for i, _ in buffer]
    lengths = [len(e["observation"]) for _, e in buffer]
    metadata = dict(domain=self.spec.domain, action_dim=self.spec.action_dim,
                    action_low=-1.0, action_high=1.0, image_size=self.spec.image_size,
                    episode_ids=ids, lengths=lengths, source=self.source)
    records = [{"episode_id": i, "steps": {k: e[k] for k in episodes_lib.EPISODE_KEYS}}
               for i, e in buffer]
    if self.vlm is not None:  # Embeddings first: episodes without them are never visible.
      write_embedding_shard(self.root, name, self.vlm, self.n_frames,
                            {i: e[episodes_lib.EMBEDDING_KEY] for i, e in buffer})
    _write_tfds_shard(os.path.join(episodes_dir, name), TFDS_NAME,
                      _episode_features(self.spec), metadata, records)
    return name


def write_embedding_shard(root: str, shard: str, vlm: str, n_frames: int,
                          embeddings: Mapping[int, np.ndarray]) -> None:
  """Writes the embeddings `{episode_id: (T, E)}` of episode shard `shard` made by `vlm`."""
  dims = {np.shape(v)[-1] for v in embeddings.values()}
  if len(dims) != 1 or any(np.ndim(v) != 2 for v in embeddings.values()):
    raise DatasetError(f"embeddings for {root}/{shard} must all be (T, E) with one E; got "
                       f"shapes {sorted({np.shape(v) for v in embeddings.values()})}")
  folder = os.path.join(root, EMBEDDINGS_DIR, embedding_key(vlm))
  os.makedirs(folder, exist_ok=True)
  embed_dim = dims.pop()
  metadata = dict(vlm=vlm, embed_dim=embed_dim, n_frames=n_frames,
                  episode_ids=[int(i) for i in embeddings])
  records = [{"episode_id": int(i), "vlm_embedding": np.asarray(v, np.float32)}
             for i, v in embeddings.items()]
  _write_tfds_shard(os.path.join(folder, shard), TFDS_EMBEDDING_NAME,
                    _embedding_features(embed_dim), metadata, records)


@dataclasses.dataclass(frozen=True)
class Shard:
  name: str
  path: str
  episode_ids: tuple[int, ...]
  lengths: tuple[int, ...]
  metadata: dict


@dataclasses.dataclass(frozen=True)
class EmbeddingSet:
  """The embeddings of one VLM: which shards have them, and their size."""
  vlm: str
  embed_dim: int
  n_frames: int
  shards: tuple[str, ...]


def _read_metadata(path: str) -> dict:
  file = os.path.join(path, "metadata.json")
  try:
    with open(file) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DatasetError(f"{file}: cannot read the shard's metadata ({e})") from e


def _open_source(path: str):
  try:
    with _TFDS_LOCK:  # see _tfds
      return _tfds().builder_from_directory(path).as_data_source(split="train")
  except Exception as e:  # TFDS raises several types for missing or damaged files
    raise DatasetError(f"{path}: cannot open the shard ({type(e).__name__}: {e})") from e


class EpisodeDataset:
  """Random access to the episodes of a dataset (nothing is loaded until read).

  Episodes are numbered `0 .. num_episodes - 1` in shard order; `episode_ids` maps these
  positions to the ids stored in the records. With `embedding` (a VLM identifier, see
  `embedding_sets`), reads include `vlm_embedding`.
  """

  def __init__(self, root: str, spec: DatasetSpec, shards: list[Shard],
               embedding_sets: dict[str, EmbeddingSet], embedding: str | None,
               cache_mib: float = 0):
    self.root, self.spec, self.shards = root, spec, shards
    self.embedding_sets = embedding_sets
    self.embedding = embedding
    self.episode_ids = np.array([i for s in shards for i in s.episode_ids], np.int64)
    self.lengths = np.array([n for s in shards for n in s.lengths], np.int64)
    self._where = [(k, j) for k, s in enumerate(shards) for j in range(len(s.episode_ids))]
    self._sources: dict[tuple[str, int], Any] = {}
    self.cache_bytes = int(cache_mib * (1 << 20))
    self._reset_cache()

  def _reset_cache(self) -> None:
    # Decoded whole episodes, least recently used first. Decoding an episode's records
    # costs about as much as a CPU world-model update, and a small dataset fits in memory.
    self._cache: collections.OrderedDict[int, Episode] = collections.OrderedDict()
    self._cached_bytes = 0
    self._cache_lock = threading.Lock()

  def __getstate__(self) -> dict:
    # Open readers and the cache stay with their process; a worker process has its own.
    state = dict(self.__dict__, _sources={})
    for key in ("_cache", "_cached_bytes", "_cache_lock"):
      state.pop(key)
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._reset_cache()

  @property
  def num_episodes(self) -> int:
    return len(self.episode_ids)

  @property
  def num_steps(self) -> int:
    return int(self.lengths.sum())

  @property
  def embed_dim(self) -> int | None:
    return self.embedding_sets[self.embedding].embed_dim if self.embedding else None

  def _source(self, kind: str, shard: int):
    key = (kind, shard)
    if key not in self._sources:  # Opened on first use: a host opens only what it reads.
      name = self.shards[shard].name
      path = (self.shards[shard].path if kind == "episodes" else os.path.join(
          self.root, EMBEDDINGS_DIR, embedding_key(self.embedding), name))
      self._sources[key] = _open_source(path)
    return self._sources[key]

  def _record(self, kind: str, index: int) -> tuple[dict, str]:
    shard, row = self._where[index]
    path = self.shards[shard].path
    try:
      record = self._source(kind, shard)[row]
    except DatasetError:
      raise
    except Exception as e:  # ArrayRecord's checksum and framing errors
      raise DatasetError(f"{path} ({kind}): record {row} cannot be read; the shard is "
                         f"corrupted or truncated ({type(e).__name__}: {e})") from e
    if int(record["episode_id"]) != self.episode_ids[index]:
      raise DatasetError(f"{path} ({kind}): record {row} holds episode "
                         f"{int(record['episode_id'])}, its metadata says "
                         f"{self.episode_ids[index]}")
    return record, path

  def read_window(self, index: int, start: int, length: int | None = None) -> Episode:
    """Steps `start .. start + length - 1` of episode `index`: dict of `(L, ...)` arrays."""
    if not 0 <= index < self.num_episodes:
      raise IndexError(f"episode {index} of {self.num_episodes}")
    total = int(self.lengths[index])
    length = total - start if length is None else length
    if start < 0 or length < 1 or start + length > total:
      raise IndexError(f"steps {start}..{start + length - 1} of a {total}-step episode")
    with self._cache_lock:
      cached = self._cache.get(index)
      if cached is not None:
        self._cache.move_to_end(index)
    if cached is None and self.cache_bytes > 0:
      cached = self._decode(index, 0, total)
      self._remember(index, cached)
    if cached is not None:
      return {k: v[start:start + length].copy() for k, v in cached.items()}
    return self._decode(index, start, length)

  def _decode(self, index: int, start: int, length: int) -> Episode:
    total = int(self.lengths[index])
    record, path = self._record("episodes", index)
    steps = record["steps"]
    if len(steps) != total:
      raise DatasetError(f"{path}: episode {self.episode_ids[index]} has {len(steps)} steps, "
                         f"its metadata says {total}")
    rows = [steps[t] for t in range(start, start + length)]
    out = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in episodes_lib.EPISODE_KEYS}
    if self.embedding:
      emb, emb_path = self._record("embeddings", index)
      emb = emb["vlm_embedding"]
      if len(emb) != total:
        raise DatasetError(f"{emb_path}: the embeddings of episode "
                           f"{self.episode_ids[index]} have {len(emb)} rows, the episode "
                           f"{total}")
      out[episodes_lib.EMBEDDING_KEY] = np.array(emb[start:start + length], np.float32)
    return out

  def _remember(self, index: int, episode: Episode) -> None:
    size = sum(v.nbytes for v in episode.values())
    if size > self.cache_bytes:
      return
    with self._cache_lock:
      if index in self._cache:
        return
      self._cache[index] = episode
      self._cached_bytes += size
      while self._cached_bytes > self.cache_bytes:
        _, old = self._cache.popitem(last=False)
        self._cached_bytes -= sum(v.nbytes for v in old.values())

  def read_episode(self, index: int) -> Episode:
    return self.read_window(index, 0)

  def process_share(self, process_index: int, process_count: int) -> np.ndarray:
    """The episode positions one process reads: every `process_count`-th one, so shares
    are disjoint, cover the dataset and differ in size by at most one."""
    if self.num_episodes < process_count:
      raise DatasetError(f"{self.root} has {self.num_episodes} episodes, fewer than the "
                         f"{process_count} processes reading it")
    return np.arange(process_index, self.num_episodes, process_count)


def _embedding_sets(root: str, shard_names: list[str]) -> dict[str, EmbeddingSet]:
  folder = os.path.join(root, EMBEDDINGS_DIR)
  sets = {}
  if not os.path.isdir(folder):
    return sets
  for key in sorted(os.listdir(folder)):
    # Orphans (embeddings of a shard whose episodes were never committed) are ignored.
    names = [n for n in _shard_names(os.path.join(folder, key)) if n in shard_names]
    if not names:
      continue
    meta = _read_metadata(os.path.join(folder, key, names[0]))
    sets[meta["vlm"]] = EmbeddingSet(vlm=meta["vlm"], embed_dim=int(meta["embed_dim"]),
                                     n_frames=int(meta["n_frames"]), shards=tuple(names))
  return sets


def open_dataset(root: str, embedding: str | None = None,
                 allow_empty: bool = False, cache_mib: float = 0) -> EpisodeDataset:
  """Opens the dataset at `root`, reading only metadata.

  `embedding`: the identifier of the VLM whose embeddings reads should include; it must
  cover every episode shard. `cache_mib`: decoded episodes kept in memory (least recently
  used dropped first; 0: none), so that windows of a cached episode cost a copy. Raises
  `DatasetError` for a missing or empty dataset.
  """
  spec = read_spec(root)
  episodes_dir = os.path.join(root, EPISODES_DIR)
  shards = []
  for name in _shard_names(episodes_dir):
    path = os.path.join(episodes_dir, name)
    meta = _read_metadata(path)
    try:
      ids, lengths = tuple(meta["episode_ids"]), tuple(meta["lengths"])
    except KeyError as e:
      raise DatasetError(f"{path}/metadata.json: missing key {e}") from e
    if len(ids) != len(lengths):
      raise DatasetError(f"{path}/metadata.json: {len(ids)} episode ids, {len(lengths)} "
                         "lengths")
    shards.append(Shard(name, path, ids, lengths, meta))
  if not shards and not allow_empty:
    raise DatasetError(f"the dataset {root} has no episodes (no complete shard in "
                       f"{episodes_dir})")
  sets = _embedding_sets(root, [s.name for s in shards])
  if embedding is not None:
    if embedding not in sets:
      raise DatasetError(f"{root} has no embeddings of VLM {embedding!r} (it has "
                         f"{sorted(sets) or 'none'}); run the embedding stage")
    missing = [s.name for s in shards if s.name not in sets[embedding].shards]
    if missing:
      raise DatasetError(f"{root}: embeddings of {embedding!r} are missing for shards "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}; run the "
                         "embedding stage to complete them")
  return EpisodeDataset(root, spec, shards, sets, embedding, cache_mib)
