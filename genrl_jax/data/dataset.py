"""Episode datasets: the folder layout, the spec every episode shares, and the shard files
(TFDS in the RLDS convention, ArrayRecord). Writing is `dataset_writer`, reading
`dataset_reader`, VLM embedding shards `embedding_shards`.

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
as valid, and the next writer removes the leftovers. Before the rename the size and SHA-256
of each of the shard's files go into its `checksums.json` (`files.write_checksums`), so
that damage done later is found (`data/dataset_check.py`, `genrl_jax check-dataset`).
Embeddings are added later as separate shards, one per episode shard, without rewriting
frames; embeddings of several VLMs can coexist. ArrayRecord checksums every chunk, so a
corrupted or truncated shard fails on read (with the file named) instead of yielding bad data.
Reading needs no TensorFlow (`as_data_source`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import threading
from typing import Any, Collection

import numpy as np

from genrl_jax import files
from genrl_jax.data.episodes import DatasetError

FORMAT_VERSION = 1
EPISODES_DIR = "episodes"
EMBEDDINGS_DIR = "embeddings"
SPEC_FILE = "dataset.json"
TFDS_NAME = "genrl_episodes"
TFDS_EMBEDDING_NAME = "genrl_embeddings"
_SHARD_RE = re.compile(r"^shard-(\d{5,})$")

@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What every episode of a dataset shares. Actions lie in [-1, 1] (method.md §9.1)."""
  domain: str
  action_dim: int
  image_size: int = 64

# TFDS resolves its modules lazily (etils LazyModule, whose cached_property holds a lock
# on Python 3.11). Two reader threads touching TFDS for the first time at once (a grain
# worker process's prefetch threads) can deadlock: one holds that lock waiting for the
# import lock of a module the other is importing, which in turn waits for that lock. So
# the first import and every shard opening (which resolves more lazy modules) go through
# this one lock.
_TFDS_LOCK = threading.RLock()


def tfds_module():
  with _TFDS_LOCK:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    return tfds


def episode_features(spec: DatasetSpec):
  f = tfds_module().features
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

def write_tfds_shard(final: str, name: str, features, metadata: dict,
                      records: list[dict]) -> None:
  """Writes `records` as the one-file TFDS dataset `final` (which must not exist), made in
  a temporary folder and renamed when complete (an atomic rename on one filesystem)."""
  tfds = tfds_module()

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
    files.write_checksums(folder)

  files.write_directory(final, fill, size=_nbytes(records))


def _nbytes(tree: Any) -> int:
  """Bytes of the arrays in a (nested dict / list) record tree: the size of a shard
  before compression, for the disk-full message."""
  if isinstance(tree, dict):
    return sum(_nbytes(v) for v in tree.values())
  if isinstance(tree, (list, tuple)):
    return sum(_nbytes(v) for v in tree)
  return int(np.asarray(tree).nbytes)


def shard_names(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    return []
  return sorted(n for n in os.listdir(folder) if _SHARD_RE.match(n))

def remove_leftovers(folder: str, of: Collection[str] | None = None) -> None:
  """Removes the temporary shard folders left by an interrupted writer (never complete
  shards): all of them, or only those of the shards named `of` (the ones this process
  writes, when several processes write into `folder`)."""
  if os.path.isdir(folder):
    for name in os.listdir(folder):
      if name.endswith(files.TEMP_SUFFIX) and (
          of is None or any(files.temporary_of(name, shard) for shard in of)):
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)

def read_shard_metadata(path: str) -> dict:
  file = os.path.join(path, "metadata.json")
  try:
    with open(file) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DatasetError(f"{file}: cannot read the shard's metadata ({e})") from e

def open_shard(path: str):
  try:
    with _TFDS_LOCK:  # see tfds_module
      return tfds_module().builder_from_directory(path).as_data_source(split="train")
  except Exception as e:  # TFDS raises several types for missing or damaged files
    raise DatasetError(f"{path}: cannot open the shard ({type(e).__name__}: {e})") from e

def read_spec(root: str) -> DatasetSpec:
  path = os.path.join(root, SPEC_FILE)
  if not os.path.exists(path):
    hint = ""
    if os.path.isdir(root) and any(n.endswith(".npz") for n in os.listdir(root)):
      hint = (" It holds .npz episode files: convert them with `genrl_jax import-npz "
              f"{root} --out={root.rstrip(os.sep)}_dataset --domain=DOMAIN` (DOMAIN: "
              "walker, cheetah, quadruped, stickman or kitchen) and train on that folder.")
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
