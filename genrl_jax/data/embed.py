"""The dataset embedding stage: per-step VLM embeddings of every episode (method.md §6.3).

Step t of an episode gets the embedding of the clip of frames `t - n_frames + 1 .. t`; the
first `n_frames - 1` steps, which have no full clip, get zeros. Embeddings are written as
embedding shards next to the episode shards (`data/dataset.py`), one per episode shard and
VLM, so frames are never rewritten; shards already embedded by this VLM are skipped, so an
interrupted run resumes.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tqdm

from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import embedding_shards
from genrl_jax.vlm.embedder import Embedder


def clip_windows(frames: np.ndarray, n_frames: int) -> np.ndarray:
  """`(T, H, W, 3) -> (T - n_frames + 1, n_frames, H, W, 3)`: the clip ending at each step
  that has a full clip (a view, no copy)."""
  windows = np.lib.stride_tricks.sliding_window_view(frames, n_frames, axis=0)
  return np.moveaxis(windows, -1, 1)


def embed_episode(frames: np.ndarray, embedder: Embedder, n_frames: int,
                  batch_size: int = 64) -> np.ndarray:
  """Per-step embeddings `(T, E)` float32 of an episode's frames `(T, H, W, 3)`."""
  length = len(frames)
  out = np.zeros((length, embedder.embed_dim), np.float32)
  windows = clip_windows(frames, n_frames) if length >= n_frames else frames[:0, None]
  for start in range(0, len(windows), batch_size):
    out[n_frames - 1 + start:n_frames - 1 + start + batch_size] = embedder.embed_video(
        np.ascontiguousarray(windows[start:start + batch_size]))
  return out


def embed_episodes(episodes: list[np.ndarray], embedder: Embedder, n_frames: int,
                   batch_size: int = 64) -> list[np.ndarray]:
  """`embed_episode` of several episodes' frames, with clips of different episodes
  filling the same batches (so the embedder always sees full batches of one shape)."""
  outs = [np.zeros((len(f), embedder.embed_dim), np.float32) for f in episodes]
  where = [(e, t) for e, f in enumerate(episodes) for t in range(n_frames - 1, len(f))]
  for start in range(0, len(where), batch_size):
    chunk = where[start:start + batch_size]
    clips = np.stack([episodes[e][t - n_frames + 1:t + 1] for e, t in chunk])
    for (e, t), row in zip(chunk, embedder.embed_video(clips)):
      outs[e][t] = row
  return outs


def embed_dataset(root: str, embedder: Embedder, n_frames: int, batch_size: int = 64,
                  progress: bool = True, process_index: int = 0,
                  process_count: int = 1, skip_damaged: bool = False) -> dict[str, float]:
  """Adds the embeddings of `embedder` to every shard of the dataset at `root` lacking them.

  Clips are embedded `batch_size` at a time (the embedder spreads each batch over its
  devices). The processes of a multi-process job share the work: process `process_index`
  of `process_count` embeds the shards `k` with `k % process_count == process_index`
  (each shard's embeddings are written atomically, so processes never collide; wait for
  all of them before reading). Returns `{'shards', 'episodes', 'clips', 'seconds',
  'clips_per_second'}` of this call. `skip_damaged`: damaged shards are left without
  embeddings (`open_dataset`) instead of refused.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} with process_count={process_count}")
  dataset = dataset_reader.open_dataset(root, skip_damaged=skip_damaged)
  have = dataset.embedding_sets.get(embedder.identifier)
  if have is not None and have.embed_dim != embedder.embed_dim:
    raise dataset_lib.DatasetError(
        f"{root}: embeddings of {embedder.identifier!r} have dimension {have.embed_dim}, "
        f"the embedder gives {embedder.embed_dim}")
  done = set(have.shards) if have else set()
  todo = [k for k, s in enumerate(dataset.shards)
          if s.name not in done and k % process_count == process_index]
  # What an interrupted run of this process left of these shards (each shard is written
  # by one process only, so no other process's write in progress is touched).
  dataset_lib.remove_leftovers(
      os.path.join(root, dataset_lib.EMBEDDINGS_DIR,
                   embedding_shards.embedding_key(embedder.identifier)),
      of=[dataset.shards[k].name for k in todo])
  start, episodes, clips = time.perf_counter(), 0, 0
  offsets = np.concatenate([[0], np.cumsum([len(s.episode_ids) for s in dataset.shards])])
  bar = tqdm.tqdm(total=sum(len(dataset.shards[k].episode_ids) for k in todo),
                  desc=f"embed ({embedder.identifier})", disable=not progress or not todo,
                  dynamic_ncols=True)
  with bar:
    for k in todo:
      shard = dataset.shards[k]
      frames = []
      for index in range(offsets[k], offsets[k + 1]):
        frames.append(dataset.read_episode(index)["observation"])
        bar.update()
      out = embed_episodes(frames, embedder, n_frames, batch_size)
      embedding_shards.write_embedding_shard(
          root, shard.name, embedder.identifier, n_frames,
          {int(dataset.episode_ids[i]): e for i, e in zip(range(offsets[k], offsets[k + 1]), out)})
      clips += sum(max(0, len(f) - n_frames + 1) for f in frames)
      episodes += len(frames)
  seconds = time.perf_counter() - start
  return dict(shards=len(todo), episodes=episodes, clips=clips, seconds=seconds,
              clips_per_second=clips / seconds if seconds > 0 else 0.0)
