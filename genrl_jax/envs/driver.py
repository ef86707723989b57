"""The one batched episode driver: a queue of episodes played on a batch of environments.

Random collection (`genrl_jax/collect/random_policy.py`), the learning collection agents
(`genrl_jax/collect/online.py`) and evaluation (`envs/evaluate.py`) all play episodes this
way: every idle environment starts the next pending episode (environments in index order),
the playing ones step together, and an episode ends at its `is_last` time step, after which
its environment starts the next one. The caller keeps the loop and what differs (how it
acts, what it records, what it does between steps):

    driver = EpisodeDriver(envs, episodes)
    while True:
      started = driver.start()          # [(env, episode)] that just reset
      if not driver.active:
        break
      actions = ...                      # (len(driver.rows), A), from driver.obs/is_first
      batch, finished = driver.step(actions)

`envs` is a batch of environments (`envs.vector.SerialEnvs` / `ParallelEnvs`):
`num_envs`, `reset(indices, seeds=...)` and `step(actions, indices)` returning stacked
time-step dicts with a leading axis over `indices`. A `ParallelEnvs` worker that dies is
restarted and its environment replayed below this loop (`envs/vector.py`): the episodes
played here, their seeds and actions, are those of a run without the failure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np


@dataclasses.dataclass
class Finished:
  """An episode that ended: its environment, its key in the driver's queue, and its time
  steps (the reset's first, then one per step; each a dict of one row of the batch)."""
  env: int
  episode: Hashable
  steps: list[dict[str, Any]]

  def arrays(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The episode as arrays `(T + 1, ...)` of `keys`."""
    return {k: np.stack([s[k] for s in self.steps]) for k in keys}


class EpisodeDriver:
  """Plays the episodes of `episodes` (keys, e.g. ids) on the environments of `envs`.

  `seeds(episode)`: the seed its environment is rebuilt with when it starts (None: reset
  without a seed, the environment's own stream continues). `obs (N, H, W, 3)` holds the
  latest observation of every environment (zeros before its first reset) and `is_first
  (N,)` marks the environments that have just started an episode (all before the first
  step): a policy acting for every row reads them.
  """

  def __init__(self, envs: Any, episodes: Iterable[Hashable],
               seeds: Callable[[Hashable], int] | None = None):
    self.envs = envs
    self.num_envs = envs.num_envs
    self._pending = iter(episodes)
    self._seeds = seeds
    self._playing: dict[int, tuple[Hashable, list[dict[str, Any]]]] = {}
    self.obs: np.ndarray | None = None  # allocated at the first reset
    self.is_first = np.ones((self.num_envs,), bool)

  @property
  def active(self) -> dict[int, Hashable]:
    """Environment -> the episode it plays."""
    return {i: e for i, (e, _) in self._playing.items()}

  @property
  def rows(self) -> list[int]:
    """The playing environments, ascending: the rows of `step`'s actions and batch."""
    return sorted(self._playing)

  def start(self) -> list[tuple[int, Hashable]]:
    """Resets the idle environments (ascending) onto the next pending episodes; returns the
    `(env, episode)` pairs started."""
    idle = [i for i in range(self.num_envs) if i not in self._playing]
    starts = list(zip(idle, self._pending))  # takes no episode beyond the idle envs
    if not starts:
      return []
    indices = [i for i, _ in starts]
    if self._seeds is None:
      first = self.envs.reset(indices)
    else:
      first = self.envs.reset(indices, seeds=[self._seeds(e) for _, e in starts])
    if self.obs is None:
      observation = np.asarray(first["observation"])
      self.obs = np.zeros((self.num_envs,) + observation.shape[1:], observation.dtype)
    for row, (i, e) in enumerate(starts):
      step = _row(first, row)
      self._playing[i] = (e, [step])
      self.obs[i], self.is_first[i] = step["observation"], True
    return starts

  def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], list[Finished]]:
    """Steps the playing environments with `actions (len(rows), A)`; returns the stacked
    time steps (rows as `rows` before the step) and the episodes that ended, by row."""
    rows = self.rows
    batch = self.envs.step(actions, rows)
    self.is_first[:] = False
    finished = []
    for row, i in enumerate(rows):
      step = _row(batch, row)
      self._playing[i][1].append(step)
      self.obs[i] = step["observation"]
      if step["is_last"]:
        episode, steps = self._playing.pop(i)
        finished.append(Finished(i, episode, steps))
    return batch, finished


def _row(batch: dict, row: int) -> dict:
  return {k: v[row] for k, v in batch.items()}
