"""The batched episode driver (`genrl_jax.envs.driver`) on a fake batch of environments
whose episodes are replayable by hand."""

from __future__ import annotations

import numpy as np

from genrl_jax.envs import driver as driver_lib


class _Envs:
  """Env `i` shows a 2x2 image of `10 * i + t` at its step t; its episodes last `seed`
  steps (a reset with a seed sets it; the first seed is `2 + i`); reward = action[0]."""

  def __init__(self, num_envs: int):
    self.num_envs = num_envs
    self.seed = [2 + i for i in range(num_envs)]
    self.t = [0] * num_envs
    self.calls = []

  def _ts(self, i, reward, first):
    return {"observation": np.full((2, 2, 3), 10 * i + self.t[i], np.uint8),
            "reward": np.float32(reward), "is_first": first,
            "is_last": self.t[i] >= self.seed[i]}

  def _stack(self, steps):
    return {k: np.stack([s[k] for s in steps]) for k in steps[0]}

  def reset(self, indices, seeds=None):
    self.calls.append(("reset", list(indices), seeds))
    for row, i in enumerate(indices):
      self.t[i] = 0
      if seeds is not None:
        self.seed[i] = seeds[row]
    return self._stack([self._ts(i, 0.0, True) for i in indices])

  def step(self, actions, indices):
    self.calls.append(("step", list(indices)))
    assert len(actions) == len(indices)
    out = []
    for row, i in enumerate(indices):
      self.t[i] += 1
      out.append(self._ts(i, actions[row][0], False))
    return self._stack(out)


def _play(driver):
  """Acts `episode key` on every step; returns (finished, rows of every step)."""
  finished, rows = [], []
  while True:
    started = driver.start()
    for i, _ in started:
      assert driver.is_first[i] and driver.obs[i, 0, 0, 0] == 10 * i
    if not driver.active:
      return finished, rows
    rows.append(driver.rows)
    actions = np.array([[float(driver.active[i])] for i in driver.rows], np.float32)
    _, done = driver.step(actions)
    assert not driver.is_first.any()
    finished += done


def test_episodes_spread_over_envs_with_seeds():
  envs = _Envs(2)
  # Episode e lasts e % 3 + 1 steps and earns e per step.
  finished, rows = _play(driver_lib.EpisodeDriver(envs, [5, 6, 7, 8, 9],
                                                  seeds=lambda e: e % 3 + 1))
  # env0: 5 (steps 1-3), 8 (4-6); env1: 6 (1), 7 (2-3), 9 (4).
  assert [(f.env, f.episode) for f in finished] == [(1, 6), (0, 5), (1, 7), (1, 9), (0, 8)]
  assert {f.episode: float(sum(s["reward"] for s in f.steps)) for f in finished} == {
      5: 15.0, 6: 6.0, 7: 14.0, 8: 24.0, 9: 9.0}
  assert rows == [[0, 1]] * 4 + [[0]] * 2
  resets = [c for c in envs.calls if c[0] == "reset"]
  assert resets == [("reset", [0, 1], [3, 1]), ("reset", [1], [2]), ("reset", [0, 1], [3, 1])]
  episode = finished[1].arrays(("observation", "reward", "is_first", "is_last"))
  np.testing.assert_array_equal(episode["observation"][:, 0, 0, 0], [0, 1, 2, 3])
  np.testing.assert_array_equal(episode["reward"], [0, 5, 5, 5])
  np.testing.assert_array_equal(episode["is_first"], [True, False, False, False])
  np.testing.assert_array_equal(episode["is_last"], [False, False, False, True])


def test_more_envs_than_episodes_and_resets_without_seeds():
  envs = _Envs(3)
  driver = driver_lib.EpisodeDriver(envs, range(2))
  finished, rows = _play(driver)
  # Env i's episodes last 2 + i steps; env 2 plays nothing and is never reset.
  assert [(f.env, f.episode, len(f.steps) - 1) for f in finished] == [(0, 0, 2), (1, 1, 3)]
  assert rows == [[0, 1], [0, 1], [1]]
  assert envs.calls[0] == ("reset", [0, 1], None)
  assert not any(2 in c[1] for c in envs.calls)
  assert driver.obs.shape == (3, 2, 2, 3) and driver.obs.dtype == np.uint8
  assert (driver.obs[2] == 0).all() and driver.obs[1, 0, 0, 0] == 13


def test_no_episodes_resets_nothing():
  envs = _Envs(2)
  assert _play(driver_lib.EpisodeDriver(envs, [])) == ([], [])
  assert envs.calls == []
