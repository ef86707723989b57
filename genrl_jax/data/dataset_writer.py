"""Writing a dataset: `EpisodeWriter` appends episodes shard by shard, one writer per dataset
at a time (a lock file the OS releases if the writer dies). A shard is written into a
temporary folder and renamed when complete, so a crash leaves nothing that reads as valid;
the next writer removes the leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from typing import Any, Iterator, Mapping

import numpy as np

from genrl_jax.data import episodes as episodes_lib
from genrl_jax.data.dataset import (EMBEDDINGS_DIR, EPISODES_DIR, TFDS_NAME, DatasetSpec,
                                    create_or_check, episode_features, remove_leftovers,
                                    shard_names, write_tfds_shard)
from genrl_jax.data.dataset_reader import open_dataset
from genrl_jax.data.embedding_shards import write_embedding_shard
from genrl_jax.data.episodes import DatasetError, Episode

def remove_orphan_embeddings(root: str) -> None:
  """Removes what a crash between writing a shard's embeddings and its episodes left."""
  shards = set(shard_names(os.path.join(root, EPISODES_DIR)))
  folder = os.path.join(root, EMBEDDINGS_DIR)
  for key in os.listdir(folder) if os.path.isdir(folder) else []:
    remove_leftovers(os.path.join(folder, key))
    for name in shard_names(os.path.join(folder, key)):
      if name not in shards:
        shutil.rmtree(os.path.join(folder, key, name))

@contextlib.contextmanager
def writer_lock(root: str) -> Iterator[None]:
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
    existing = open_dataset(root, allow_empty=True, check_sizes=False)  # ids only
    self._ids = set(existing.episode_ids.tolist())
    # Embeddings of one VLM have one size: fixed by those already written, else the first.
    have = existing.embedding_sets.get(vlm) if vlm is not None else None
    self._embed_dim = have.embed_dim if have else None

  def __enter__(self) -> "EpisodeWriter":
    self._lock = writer_lock(self.root)
    self._lock.__enter__()
    remove_leftovers(os.path.join(self.root, EPISODES_DIR))
    remove_orphan_embeddings(self.root)
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
    names = shard_names(episodes_dir)
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
    write_tfds_shard(os.path.join(episodes_dir, name), TFDS_NAME,
                      episode_features(self.spec), metadata, records)
    return name
