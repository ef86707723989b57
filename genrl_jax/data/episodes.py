"""The in-memory episode: keys, shapes and checks shared by collection, import and datasets.

An episode is a dict of arrays with one row per time step (method.md §6.1, frames HWC):
`observation (T, 64, 64, 3) uint8`, `action (T, A) float32` (the action that led to each
frame, row 0 zeros), `reward (T,) float32` (received on arriving at the frame, row 0 zero),
`discount (T,) float32`, `is_first/is_last/is_terminal (T,) bool`, and optionally
`vlm_embedding (T, E) float32`, the VLM embedding of the 8 frames ending at each step (zeros
where fewer than 8 frames exist). On disk episodes live in datasets (`data/dataset.py`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

EPISODE_KEYS = ("observation", "action", "reward", "discount", "is_first", "is_last",
                "is_terminal")
STEP_DTYPES = {"observation": np.uint8, "action": np.float32, "reward": np.float32,
               "discount": np.float32, "is_first": np.bool_, "is_last": np.bool_,
               "is_terminal": np.bool_}
EMBEDDING_KEY = "vlm_embedding"
Episode = dict[str, np.ndarray]


class DatasetError(ValueError):
  """A dataset file or directory does not hold what is expected."""


def check_episode(episode: Mapping[str, np.ndarray], where: str, image_size: int = 64,
                  action_dim: int | None = None) -> None:
  """Raises `DatasetError` naming `where` unless `episode` has the layout above."""
  missing = [k for k in EPISODE_KEYS if k not in episode]
  if missing:
    raise DatasetError(f"{where}: missing keys {missing}; expected {list(EPISODE_KEYS)}")
  obs = np.asarray(episode["observation"])
  want = (image_size, image_size, 3)
  if obs.ndim != 4 or obs.shape[1:] != want or obs.dtype != np.uint8:
    raise DatasetError(f"{where}: 'observation' is {obs.dtype}{obs.shape}; expected uint8 "
                       f"(T, {image_size}, {image_size}, 3)")
  length = len(obs)
  if length < 1:
    raise DatasetError(f"{where}: the episode has no steps")
  action = np.asarray(episode["action"])
  if action.ndim != 2 or (action_dim is not None and action.shape[1] != action_dim):
    raise DatasetError(f"{where}: 'action' has shape {action.shape}; expected (T, "
                       f"{action_dim if action_dim is not None else 'A'})")
  keys = EPISODE_KEYS[1:] + ((EMBEDDING_KEY,) if EMBEDDING_KEY in episode else ())
  for key in keys:
    if len(episode[key]) != length:
      raise DatasetError(f"{where}: {key!r} has {len(episode[key])} rows; 'observation' has "
                         f"{length}")
  for key in EPISODE_KEYS[2:]:
    if np.ndim(episode[key]) != 1:
      raise DatasetError(f"{where}: {key!r} has shape {np.shape(episode[key])}; expected "
                         f"({length},)")
  if EMBEDDING_KEY in episode and np.ndim(episode[EMBEDDING_KEY]) != 2:
    raise DatasetError(f"{where}: {EMBEDDING_KEY!r} has shape "
                       f"{np.shape(episode[EMBEDDING_KEY])}; expected ({length}, E)")


def cast_episode(episode: Mapping[str, np.ndarray]) -> Episode:
  """The episode's arrays in the dtypes of the layout (e.g. rewards stored as float64)."""
  out = {k: np.asarray(episode[k], STEP_DTYPES[k]) for k in EPISODE_KEYS}
  if EMBEDDING_KEY in episode:
    out[EMBEDDING_KEY] = np.asarray(episode[EMBEDDING_KEY], np.float32)
  return out
