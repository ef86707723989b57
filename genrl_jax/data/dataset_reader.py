"""Reading a dataset: `open_dataset` reads only metadata, and the `EpisodeDataset` it returns
gives random access to episodes, windows and their VLM embeddings.

Damaged shards (`data/dataset_check.py`) are refused with the shard named: a file whose
size differs from the shard's checksum record when the dataset is opened, a file whose
content differs when the shard is first read (each shard is hashed once per process), a
record that fails to decode when it is read. `open_dataset(skip_damaged=True)` checks
every shard in full first and leaves the damaged ones out instead.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from typing import Any

import numpy as np

from genrl_jax.data import dataset_check
from genrl_jax.data import episodes as episodes_lib
from genrl_jax.data.dataset import (EMBEDDINGS_DIR, EPISODES_DIR, SPEC_FILE, DatasetSpec,
                                    open_shard, read_shard_metadata, read_spec, shard_names)
from genrl_jax.data.embedding_shards import EmbeddingSet, embedding_key, embedding_sets_of
from genrl_jax.data.episodes import DatasetError, Episode

@dataclasses.dataclass(frozen=True)
class Shard:
  name: str
  path: str
  episode_ids: tuple[int, ...]
  lengths: tuple[int, ...]
  metadata: dict

class EpisodeDataset:
  """Random access to the episodes of a dataset (nothing is loaded until read).

  Episodes are numbered `0 .. num_episodes - 1` in shard order; `episode_ids` maps these
  positions to the ids stored in the records. With `embedding` (a VLM identifier, see
  `embedding_sets`), reads include `vlm_embedding`.
  """

  def __init__(self, root: str, spec: DatasetSpec, shards: list[Shard],
               embedding_sets: dict[str, EmbeddingSet], embedding: str | None,
               cache_mib: float = 0,
               skipped: tuple[dataset_check.ShardReport, ...] = ()):
    """`skipped`: the damaged shards left out (`open_dataset(skip_damaged=True)`)."""
    self.root, self.spec, self.shards = root, spec, shards
    self.skipped = skipped
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
  def skipped_episodes(self) -> int:
    """Episodes of the damaged shards left out (their episode shard's metadata)."""
    return len({i for r in self.skipped for i in r.episode_ids})

  @property
  def embed_dim(self) -> int | None:
    return self.embedding_sets[self.embedding].embed_dim if self.embedding else None

  def _source(self, kind: str, shard: int):
    key = (kind, shard)
    if key not in self._sources:  # Opened on first use: a host opens only what it reads.
      name = self.shards[shard].name
      path = (self.shards[shard].path if kind == "episodes" else os.path.join(
          self.root, EMBEDDINGS_DIR, embedding_key(self.embedding), name))
      damage = dataset_check.shard_content_damage(path)
      if damage:
        raise DatasetError(_damaged_message(self.root, path, damage))
      self._sources[key] = open_shard(path)
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

def _damaged_message(root: str, path: str, problems: list[str] | tuple[str, ...]) -> str:
  return (f"{path}: damaged shard ({'; '.join(problems)}); `genrl_jax check-dataset {root}` "
          "lists every damaged shard, --config.data.skip_damaged=True trains on the others")


def open_dataset(root: str, embedding: str | None = None,
                 allow_empty: bool = False, cache_mib: float = 0,
                 skip_damaged: bool = False, check_sizes: bool = True) -> EpisodeDataset:
  """Opens the dataset at `root`, reading only metadata (and the sizes of its files).

  `embedding`: the identifier of the VLM whose embeddings reads should include; it must
  cover every episode shard. `cache_mib`: decoded episodes kept in memory (least recently
  used dropped first; 0: none), so that windows of a cached episode cost a copy. Raises
  `DatasetError` for a missing or empty dataset, and (`check_sizes`; writers and id
  listings, which read no episode, turn it off) for a shard whose files' sizes differ from
  its checksum record. `skip_damaged`: check every shard in full first
  (`dataset_check.check_shard`: hashes, or every record of shards without checksums) and
  leave out the damaged ones (with their embeddings; listed in `skipped`).
  """
  spec = read_spec(root)
  episodes_dir = os.path.join(root, EPISODES_DIR)
  shards = []
  skipped = []
  emb_dir = (os.path.join(root, EMBEDDINGS_DIR, embedding_key(embedding))
             if embedding is not None else None)
  for name in shard_names(episodes_dir):
    path = os.path.join(episodes_dir, name)
    folders = [(path, "episodes")]
    if emb_dir is not None and os.path.isdir(os.path.join(emb_dir, name)):
      folders.append((os.path.join(emb_dir, name), f"embeddings {embedding_key(embedding)}"))
    if skip_damaged:
      reports = [dataset_check.check_shard(*f) for f in folders]
      if not all(r.intact for r in reports):
        # Counted by the episode shard's ids (those a damaged embedding shard belongs to).
        skipped += [dataclasses.replace(r, episode_ids=reports[0].episode_ids)
                    for r in reports if not r.intact]
        continue
    elif check_sizes:
      for folder, _ in folders:
        damage = dataset_check.shard_size_damage(folder)
        if damage:
          raise DatasetError(_damaged_message(root, folder, damage))
    meta = read_shard_metadata(path)
    try:
      ids, lengths = tuple(meta["episode_ids"]), tuple(meta["lengths"])
    except KeyError as e:
      raise DatasetError(f"{path}/metadata.json: missing key {e}") from e
    if len(ids) != len(lengths):
      raise DatasetError(f"{path}/metadata.json: {len(ids)} episode ids, {len(lengths)} "
                         "lengths")
    shards.append(Shard(name, path, ids, lengths, meta))
  if not shards and skipped:
    raise DatasetError(f"every shard of the dataset {root} is damaged, e.g. "
                       f"{skipped[0].describe()}")
  if not shards and not allow_empty:
    raise DatasetError(f"the dataset {root} has no episodes (no complete shard in "
                       f"{episodes_dir})")
  sets = embedding_sets_of(root, [s.name for s in shards])
  if embedding is not None:
    if embedding not in sets:
      raise DatasetError(f"{root} has no embeddings of VLM {embedding!r} (it has "
                         f"{sorted(sets) or 'none'}); run the embedding stage")
    missing = [s.name for s in shards if s.name not in sets[embedding].shards]
    if missing:
      raise DatasetError(f"{root}: embeddings of {embedding!r} are missing for shards "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}; run the "
                         "embedding stage to complete them")
  return EpisodeDataset(root, spec, shards, sets, embedding, cache_mib, tuple(skipped))

def existing_episode_ids(root: str) -> set[int]:
  """Ids of the episodes of the dataset at `root` (empty if there is none yet)."""
  if not os.path.exists(os.path.join(root, SPEC_FILE)):
    return set()
  return set(open_dataset(root, allow_empty=True, check_sizes=False).episode_ids.tolist())
