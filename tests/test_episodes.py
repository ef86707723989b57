"""Episode files and the uniform sequence sampler (interim storage; see data/episodes.py)."""

import os

import numpy as np
import pytest

import synthetic
from genrl_jax import collect
from genrl_jax.data import episodes as episodes_lib


def test_episode_round_trip_and_index_listing(tmp_path):
  ep = synthetic.random_episode(np.random.default_rng(0), 12)
  path = episodes_lib.save_episode(str(tmp_path), 3, ep)
  assert os.path.basename(path) == "000003-12.npz"
  assert episodes_lib.episode_indices(str(tmp_path)) == {3}
  (loaded,) = episodes_lib.load_episodes(str(tmp_path))
  for k in episodes_lib.EPISODE_KEYS:
    np.testing.assert_array_equal(loaded[k], ep[k])


def test_sampler_windows_stay_inside_one_episode_and_cover_all_episodes(tmp_path):
  rng = np.random.default_rng(0)
  eps = []
  for i, length in enumerate([10, 25, 40]):
    ep = synthetic.random_episode(rng, length)
    ep["reward"] = np.full(length, i, np.float32) + np.arange(length) / 100  # (episode, t)
    eps.append(ep)
  sampler = episodes_lib.SequenceSampler(eps, batch_size=16, length=8, seed=3)
  seen = set()
  for step in range(20):
    batch = sampler.sample(step)
    assert batch["observation"].shape == (16, 8, 64, 64, 3)
    ids = np.floor(batch["reward"]).astype(int)
    assert (ids == ids[:, :1]).all(), "a window crossed an episode boundary"
    t = np.round((batch["reward"] - ids) * 100).astype(int)
    np.testing.assert_array_equal(np.diff(t, axis=1), 1)  # consecutive frames
    seen |= set(ids[:, 0].tolist())
  assert seen == {0, 1, 2}
  np.testing.assert_array_equal(sampler.sample(5)["action"], sampler.sample(5)["action"])
  assert not np.array_equal(sampler.sample(5)["action"], sampler.sample(6)["action"])


def test_bad_datasets_raise_errors_naming_the_problem(tmp_path):
  with pytest.raises(episodes_lib.DatasetError, match="no episode files"):
    episodes_lib.load_episodes(str(tmp_path))
  ep = synthetic.random_episode(np.random.default_rng(0), 6)
  with pytest.raises(episodes_lib.DatasetError, match="shorter than the sequence length 8"):
    episodes_lib.SequenceSampler([ep], 2, 8, 0)
  bad = dict(ep, observation=ep["observation"][:, :32])
  with pytest.raises(episodes_lib.DatasetError, match="'observation' is uint8\\(6, 32, 64, 3\\)"):
    episodes_lib.save_episode(str(tmp_path), 0, bad)
  (tmp_path / "000001-6.npz").write_bytes(b"not a zip")
  with pytest.raises(episodes_lib.DatasetError, match="000001-6.npz: cannot be read"):
    episodes_lib.load_episodes(str(tmp_path))


class _CountingEnv:
  """A 5-step environment whose frames encode the seed, for collection tests."""
  action_dim = 2

  def __init__(self, seed):
    self.seed, self.t = seed, 0

  def _step(self, action, reward):
    last = self.t == 5
    return dict(observation=np.full((64, 64, 3), self.seed, np.uint8), action=action,
                reward=np.float32(reward), discount=np.float32(1), is_first=self.t == 0,
                is_last=last, is_terminal=False)

  def reset(self):
    self.t = 0
    return self._step(np.zeros(2, np.float32), 0.0)

  def step(self, action):
    self.t += 1
    return self._step(action, 1.0)


def test_interrupted_collection_resumes_and_keeps_earlier_episodes(tmp_path):
  d = str(tmp_path)
  assert collect.collect_random(_CountingEnv, d, 2, seed=10, progress=False) == [0, 1]
  first = episodes_lib.load_episodes(d)
  mtimes = {p: os.path.getmtime(os.path.join(d, p)) for p in os.listdir(d)}
  assert collect.collect_random(_CountingEnv, d, 4, seed=10, progress=False) == [2, 3]
  again = episodes_lib.load_episodes(d)
  assert len(again) == 4 and [int(e["observation"][0, 0, 0, 0]) for e in again] == [10, 11, 12, 13]
  for a, b in zip(first, again[:2]):
    np.testing.assert_array_equal(a["action"], b["action"])
  assert all(os.path.getmtime(os.path.join(d, p)) == t for p, t in mtimes.items())
  assert again[0]["observation"].shape == (6, 64, 64, 3)
