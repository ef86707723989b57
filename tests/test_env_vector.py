"""Tests of genrl_jax.envs.vector (environments in worker processes) and parallel collection."""

import gc
import multiprocessing
import os
import re
import signal
import threading

import numpy as np
import pytest

import genrl_jax.envs  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)
from genrl_jax.collect import random_policy
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.data import dataset_writer
from genrl_jax.envs import make_env
from genrl_jax.envs.vector import ParallelEnvs, SerialEnvs, make_envs

TASK = "stickman_walk"
# 0.5 s of simulated time: 10 agent steps with action repeat 2.
SHORT = dict(fast_render=True, env_kwargs=dict(time_limit=0.5))


def _serial_rollout(seed, actions):
  env = make_env(TASK, seed=seed, fast_render=True, time_limit=0.5)
  steps = [env.reset()] + [env.step(a) for a in actions]
  env.close()
  return steps


def _assert_no_live_workers(envs):
  assert all(not p.is_alive() and p.exitcode is not None for p in envs.processes)
  assert not [p for p in multiprocessing.active_children() if p in envs.processes]


def test_parallel_envs_equal_serial_envs_step_for_step():
  rng = np.random.default_rng(0)
  with make_envs(TASK, num_envs=2, seed=3, **SHORT) as envs:
    assert isinstance(envs, ParallelEnvs) and envs.num_envs == 2 and envs.seeds == [3, 4]
    actions = rng.uniform(-1, 1, (10, 2, envs.action_dim)).astype(np.float32)
    batches = [envs.reset()] + [envs.step(a) for a in actions]
  first = batches[0]
  assert first["observation"].shape == (2, 64, 64, 3) and first["observation"].dtype == np.uint8
  assert first["reward"].shape == (2,) and first["reward"].dtype == np.float32
  assert first["action"].shape == (2, envs.action_dim) and first["is_first"].all()
  assert batches[-1]["is_last"].all() and not batches[-2]["is_last"].any()
  for i in range(2):
    serial = _serial_rollout(3 + i, actions[:, i])
    for t, (batch, ts) in enumerate(zip(batches, serial)):
      for key, value in ts.items():
        np.testing.assert_array_equal(batch[key][i], value, err_msg=f"env {i}, step {t}, {key}")
  # The in-process fallback gives the same, and rebuilding with new seeds resets an env.
  with make_envs(TASK, num_envs=2, seed=3, parallel=False, **SHORT) as envs:
    assert isinstance(envs, SerialEnvs)
    envs.reset()
    np.testing.assert_array_equal(envs.step(actions[0])["observation"],
                                  batches[1]["observation"])
    again = envs.reset([1], seeds=[3])
    np.testing.assert_array_equal(again["observation"][0], batches[0]["observation"][0])
  with pytest.raises(RuntimeError, match="is closed"):
    envs.reset()


def test_parallel_errors_name_the_env_and_leave_the_envs_usable():
  with ParallelEnvs(TASK, 2, seed=0, **SHORT) as envs:
    # Raised in a worker (step before reset), re-raised here with the worker's message.
    with pytest.raises(RuntimeError, match=r"env 0 \(stickman_walk, seed 0\): .*call reset"):
      envs.step(np.zeros((2, envs.action_dim)))
    envs.reset()
    bad = [np.zeros(envs.action_dim), np.zeros(envs.action_dim + 1)]
    with pytest.raises(ValueError, match=r"env 1 \(stickman_walk, seed 1\): action must have "
                       rf"shape \({envs.action_dim},\), got shape \({envs.action_dim + 1},\)"):
      envs.step(bad)
    with pytest.raises(ValueError, match=r"expected actions of shape \(2, "):
      envs.step(np.zeros((3, envs.action_dim)))
    # Nothing stepped: both envs are still at step 0 of 10.
    for _ in range(10):
      ts = envs.step(np.zeros((2, envs.action_dim)))
    assert ts["is_last"].all()
  _assert_no_live_workers(envs)
  with pytest.raises(ValueError, match=r"env 0 \(stickman_nope, seed 0\): unknown task"):
    ParallelEnvs("stickman_nope", 1, seed=0)


def test_parallel_killed_worker_raises_runtime_error_instead_of_hanging():
  # Without restarts (tests/test_faults_workers.py has them): the death itself raises.
  envs = ParallelEnvs(TASK, 2, seed=0, max_restarts=0, **SHORT)
  envs.reset()
  os.kill(envs.processes[1].pid, signal.SIGKILL)
  # The step runs in a thread so that a hang fails the test (after a generous wait) instead
  # of blocking the suite; what is asserted is the error, not how fast it came.
  raised: list[BaseException] = []
  def step():
    try:
      envs.step(np.zeros((2, envs.action_dim)))
    except BaseException as e:  # pylint: disable=broad-except
      raised.append(e)
  thread = threading.Thread(target=step, daemon=True)
  thread.start()
  thread.join(timeout=300)
  assert not thread.is_alive(), "step() still waits on a killed worker after 300 s"
  assert len(raised) == 1 and isinstance(raised[0], RuntimeError), raised
  assert re.search(r"env 1 .*killed by signal SIGKILL", str(raised[0])), raised[0]
  assert envs.closed
  _assert_no_live_workers(envs)
  with pytest.raises(RuntimeError, match="is closed"):
    envs.reset()


def test_parallel_close_and_garbage_collection_leave_no_live_children():
  envs = ParallelEnvs(TASK, 2, seed=0, **SHORT)
  envs.reset()
  envs.close()
  envs.close()  # idempotent
  _assert_no_live_workers(envs)
  envs = ParallelEnvs(TASK, 1, seed=0, **SHORT)
  processes = envs.processes
  del envs
  gc.collect()
  assert all(not p.is_alive() for p in processes)


def _episode_files(root):
  """`{episode id: episode}` of the dataset at `root`."""
  dataset = dataset_reader.open_dataset(root)
  return {int(i): dataset.read_episode(n) for n, i in
          sorted(enumerate(dataset.episode_ids), key=lambda x: x[1])}


def _writer(root, action_dim, domain="stickman"):
  return dataset_writer.EpisodeWriter(root, dataset_lib.DatasetSpec(domain, action_dim), 2)


def _assert_same_episodes(a, b):
  assert list(a) == list(b)
  for name in a:
    assert set(a[name]) == set(b[name])
    for key in a[name]:
      np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name} {key}")


def test_parallel_collection_with_1_and_2_envs_gives_identical_episodes(tmp_path):
  legacy, one, two, resumed = (str(tmp_path / d) for d in ("legacy", "one", "two", "resumed"))
  make = lambda s: make_env(TASK, seed=s, fast_render=True, time_limit=0.5)
  with _writer(legacy, make(0).action_dim) as writer:
    assert random_policy.collect_random(make, writer, 3, seed=5, progress=False) == [0, 1, 2]
  kwargs = dict(fast_render=True, time_limit=0.5, progress=False)
  assert random_policy.collect_random_parallel(TASK, one, 3, 5, num_envs=1, **kwargs) == [0, 1, 2]
  assert random_policy.collect_random_parallel(TASK, two, 3, 5, num_envs=2, **kwargs) == [0, 1, 2]
  _assert_same_episodes(_episode_files(legacy), _episode_files(one))
  _assert_same_episodes(_episode_files(one), _episode_files(two))
  # Resuming a shorter collection never rewrites its shards and gives the same episodes.
  assert random_policy.collect_random_parallel(TASK, resumed, 2, 5, num_envs=2, **kwargs) == [0, 1]
  first_shard = os.path.join(resumed, "episodes", "shard-00000")
  mtime = os.path.getmtime(first_shard)
  assert random_policy.collect_random_parallel(TASK, resumed, 3, 5, num_envs=2, **kwargs) == [2]
  assert os.path.getmtime(first_shard) == mtime
  _assert_same_episodes(_episode_files(one), _episode_files(resumed))
  assert random_policy.collect_random_parallel(TASK, resumed, 3, 5, num_envs=2, **kwargs) == []


class _VaryingEnv:
  """An episode of `2 + seed % 3` steps whose frames hold the seed."""
  action_dim, obs_shape = 2, (64, 64, 3)

  def __init__(self, seed):
    self.seed, self.t = seed, 0

  def close(self):
    pass

  def _ts(self, action):
    return dict(observation=np.full((64, 64, 3), self.seed, np.uint8), action=action,
                reward=np.float32(self.t), discount=np.float32(1), is_first=self.t == 0,
                is_last=self.t == 2 + self.seed % 3, is_terminal=False)

  def reset(self):
    self.t = 0
    return self._ts(np.zeros(2, np.float32))

  def step(self, action):
    self.t += 1
    return self._ts(np.asarray(action, np.float32))


class _VaryingEnvs(SerialEnvs):
  """SerialEnvs over `_VaryingEnv`: episodes of different lengths end at different steps."""

  def _make(self, seed):
    return _VaryingEnv(seed)


def test_parallel_collection_handles_episodes_ending_at_different_steps(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  with _writer(a, 2, "varying") as writer:
    assert random_policy.collect_random(_VaryingEnv, writer, 7, seed=4,
                                  progress=False) == list(range(7))
  envs = _VaryingEnvs("varying_task", 3, seed=4)
  with _writer(b, 2, "varying") as writer:
    assert random_policy.collect_random_envs(envs, writer, 7, seed=4,
                                       progress=False) == list(range(7))
  _assert_same_episodes(_episode_files(a), _episode_files(b))
  lengths = {len(e["observation"]) for e in _episode_files(b).values()}
  assert lengths == {3, 4, 5}
