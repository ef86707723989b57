"""VLM embedding shards of a dataset: `embeddings/<vlm key>/shard-NNNNN/`, one per episode
shard, each record `{'episode_id', 'vlm_embedding': (T, E) float32}` (row t embeds the
frames ending at step t). Added after the episodes without rewriting frames; several VLMs'
embeddings can coexist.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping

import numpy as np

from genrl_jax.data.dataset import (EMBEDDINGS_DIR, TFDS_EMBEDDING_NAME, read_shard_metadata,
                                    shard_names, tfds_module, write_tfds_shard)
from genrl_jax.data.episodes import DatasetError

def embedding_key(identifier: str) -> str:
  """The folder name of a VLM's embeddings (`openai/clip-vit-b` -> `openai--clip-vit-b`)."""
  key = re.sub(r"[^A-Za-z0-9._-]", "-", identifier.replace("/", "--"))
  if not key.strip(".-"):
    raise ValueError(f"VLM identifier {identifier!r} gives no usable folder name")
  return key

def embedding_features(embed_dim: int):
  f = tfds_module().features
  return f.FeaturesDict({
      "episode_id": f.Scalar(dtype=np.int64),
      "vlm_embedding": f.Tensor(shape=(None, embed_dim), dtype=np.float32,
                                encoding=f.Encoding.BYTES),
  })

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
  write_tfds_shard(os.path.join(folder, shard), TFDS_EMBEDDING_NAME,
                    embedding_features(embed_dim), metadata, records)

@dataclasses.dataclass(frozen=True)
class EmbeddingSet:
  """The embeddings of one VLM: which shards have them, and their size."""
  vlm: str
  embed_dim: int
  n_frames: int
  shards: tuple[str, ...]

def embedding_sets_of(root: str, episode_shards: list[str]) -> dict[str, EmbeddingSet]:
  """The embeddings at `root` of each VLM that covers some of `episode_shards` (orphan
  shards, whose episodes were never committed, are left out)."""
  folder = os.path.join(root, EMBEDDINGS_DIR)
  sets = {}
  if not os.path.isdir(folder):
    return sets
  for key in sorted(os.listdir(folder)):
    # Orphans (embeddings of a shard whose episodes were never committed) are ignored.
    names = [n for n in shard_names(os.path.join(folder, key)) if n in episode_shards]
    if not names:
      continue
    meta = read_shard_metadata(os.path.join(folder, key, names[0]))
    sets[meta["vlm"]] = EmbeddingSet(vlm=meta["vlm"], embed_dim=int(meta["embed_dim"]),
                                     n_frames=int(meta["n_frames"]), shards=tuple(names))
  return sets
