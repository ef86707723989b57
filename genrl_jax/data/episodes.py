"""Episodes on disk (one compressed `.npz` per episode) and uniform sequence sampling.

Episode layout (ours, spec 6.1 with HWC frames): `observation (T, 64, 64, 3) uint8`,
`action (T, A) float32` (the action that led to each frame, row 0 zeros),
`reward (T,) float32`, `discount (T,) float32`, `is_first/is_last/is_terminal (T,) bool`.

Sampling follows the reference (spec 6.2): the episode is uniform over episodes (not
weighted by length), the start uniform in `[0, len - L]`, and a window never crosses
episodes. Batch `n` of a run is drawn from `np.random.default_rng([seed, n])`, so a resumed
run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import glob
import os
from typing import Mapping

import numpy as np

EPISODE_KEYS = ("observation", "action", "reward", "discount", "is_first", "is_last",
                "is_terminal")
# Optional per-step keys: `vlm_embedding (T, E)`, the embedding of the frames t-7..t.
OPTIONAL_KEYS = ("vlm_embedding",)
Episode = dict[str, np.ndarray]


class DatasetError(ValueError):
  """A dataset file or directory does not hold what is expected."""


def episode_path(directory: str, index: int, length: int) -> str:
  return os.path.join(directory, f"{index:06d}-{length}.npz")


def save_episode(directory: str, index: int, episode: Mapping[str, np.ndarray]) -> str:
  """Writes one episode atomically (temporary file, then rename). Returns the path."""
  check_episode(episode, f"episode {index}")
  os.makedirs(directory, exist_ok=True)
  length = len(episode["observation"])
  path = episode_path(directory, index, length)
  tmp = path + ".tmp.npz"
  keys = EPISODE_KEYS + tuple(k for k in OPTIONAL_KEYS if k in episode)
  np.savez_compressed(tmp, **{k: np.asarray(episode[k]) for k in keys})
  os.replace(tmp, path)
  return path


def episode_indices(directory: str) -> set[int]:
  """Indices of the complete episode files in `directory`."""
  names = (os.path.basename(p) for p in glob.glob(os.path.join(directory, "*.npz")))
  return {int(n.split("-")[0]) for n in names if not n.endswith(".tmp.npz")}


def check_episode(episode: Mapping[str, np.ndarray], where: str) -> None:
  missing = [k for k in EPISODE_KEYS if k not in episode]
  if missing:
    raise DatasetError(f"{where}: missing keys {missing}; expected {list(EPISODE_KEYS)}")
  obs = np.asarray(episode["observation"])
  if obs.ndim != 4 or obs.shape[1:] != (64, 64, 3) or obs.dtype != np.uint8:
    raise DatasetError(f"{where}: 'observation' is {obs.dtype}{obs.shape}; expected uint8 "
                       "(T, 64, 64, 3)")
  length = len(obs)
  for key in EPISODE_KEYS[1:] + tuple(k for k in OPTIONAL_KEYS if k in episode):
    if len(episode[key]) != length:
      raise DatasetError(f"{where}: {key!r} has {len(episode[key])} rows; 'observation' has "
                         f"{length}")


def load_episodes(directory: str) -> list[Episode]:
  """Loads every episode file of `directory`, in index order, checking each one."""
  paths = sorted(p for p in glob.glob(os.path.join(directory, "*.npz"))
                 if not p.endswith(".tmp.npz"))
  if not paths:
    raise DatasetError(f"no episode files (*.npz) in {directory}")
  episodes = []
  for path in paths:
    try:
      with np.load(path) as data:
        episode = {k: data[k] for k in data.files}
    except Exception as e:  # zipfile / pickle / OS errors of a damaged file
      raise DatasetError(f"{path}: cannot be read as an episode file ({e})") from e
    check_episode(episode, path)
    episodes.append(episode)
  return episodes


class SequenceSampler:
  """Draws batches `(B, L, ...)` of windows from whole episodes held in memory."""

  def __init__(self, episodes: list[Episode], batch_size: int, length: int, seed: int):
    if not episodes:
      raise DatasetError("the dataset is empty")
    short = [i for i, e in enumerate(episodes) if len(e["observation"]) < length]
    if short:
      raise DatasetError(f"episodes {short} are shorter than the sequence length {length}")
    self.episodes = episodes
    # Optional keys are sampled when every episode has them.
    self.keys = EPISODE_KEYS + tuple(k for k in OPTIONAL_KEYS
                                     if all(k in e for e in episodes))
    self.batch_size = batch_size
    self.length = length
    self.seed = seed

  def sample(self, step: int) -> dict[str, np.ndarray]:
    """The batch of step `step`: deterministic in `(seed, step)`."""
    rng = np.random.default_rng([self.seed, step])
    which = rng.integers(0, len(self.episodes), self.batch_size)
    windows = []
    for i in which:
      episode = self.episodes[i]
      start = rng.integers(0, len(episode["observation"]) - self.length + 1)
      windows.append({k: episode[k][start:start + self.length] for k in self.keys})
    return {k: np.stack([w[k] for w in windows]) for k in self.keys}
