"""Per-step VLM embeddings of episode files (spec 6.3).

Step t of an episode gets the embedding of the clip of frames `t - 7 .. t`; the first
`n_frames - 1` steps, which have no full clip, get zeros. Episodes that already carry
`vlm_embedding` are skipped, so an interrupted run resumes; each file is rewritten
atomically (frames and all), so a crash never leaves a half-written episode.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import tqdm

from genrl_jax.data import episodes as episodes_lib
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


def _episode_index(path: str) -> int:
  head = os.path.basename(path).split("-")[0]
  if not head.isdigit():
    raise episodes_lib.DatasetError(f"{path}: episode files are named '<index>-<length>.npz'")
  return int(head)


def embed_episodes(directory: str, embedder: Embedder, n_frames: int, batch_size: int = 64,
                   progress: bool = True) -> int:
  """Adds `vlm_embedding` to every episode file of `directory` lacking it.

  Returns the number of episodes embedded by this call.
  """
  paths = sorted(p for p in glob.glob(os.path.join(directory, "*.npz"))
                 if not p.endswith(".tmp.npz"))
  if not paths:
    raise episodes_lib.DatasetError(f"no episode files (*.npz) in {directory}")
  done = 0
  for path in tqdm.tqdm(paths, desc="embed", disable=not progress, dynamic_ncols=True):
    index = _episode_index(path)
    with np.load(path) as data:
      if "vlm_embedding" in data.files:
        continue
      episode = {k: data[k] for k in data.files}
    if episodes_lib.episode_path(directory, index, len(episode["observation"])) != path:
      raise episodes_lib.DatasetError(f"{path}: episode files are named "
                                      "'<index>-<length>.npz'; nothing was rewritten")
    episode["vlm_embedding"] = embed_episode(episode["observation"], embedder, n_frames,
                                             batch_size)
    episodes_lib.save_episode(directory, index, episode)
    done += 1
  return done
