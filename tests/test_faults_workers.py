"""Dead environment workers (docs/reliability.md): a worker process of `ParallelEnvs` killed
with SIGKILL during collection or evaluation is noticed at once, restarted, and its
environment replayed from its seed, so that the dataset equals an uninterrupted
collection's bit for bit and evaluation returns are identical; past its restarts, or where
replay is not possible, one clear error, and nothing already collected is lost.

Kills are injected at chosen calls (before a seeded reset, mid-episode, at an episode's
last step, two workers at once, several times the same worker) and from a timer while a
worker computes. Each test records its injections (`fault_tally`), printed at the end.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time

import numpy as np
import pytest

from fault_tally import record, tally  # noqa: F401  (tally: an autouse fixture)
import genrl_jax.envs  # noqa: F401  (selects MUJOCO_GL before mujoco is imported)
from genrl_jax.collect import random_policy
from genrl_jax.data import dataset_reader
from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import vector as vector_lib

TASK = "stickman_walk"
SEED = 5
EPISODES = 8
# 0.5 s of simulated time: 10 agent steps per episode with action repeat 2.
COLLECT = dict(fast_render=True, time_limit=0.5, progress=False, episodes_per_shard=2)
SHORT = dict(fast_render=True, env_kwargs=dict(time_limit=0.5))
# A killed worker is noticed within _POLL_S; the rest of a restarted call is the new
# worker's start (imports, MuJoCo, GL) and its replay. Generous on a loaded 2-core machine.
NOTICED_WITHIN_S = 60.0


def _kill(envs: vector_lib.ParallelEnvs, worker: int) -> None:
  os.kill(envs.processes[worker].pid, signal.SIGKILL)


class _Injector:
  """Kills workers of every `ParallelEnvs` at chosen calls of `reset` / `step`.

  `plan`: {(method, call number from 1): workers to kill just before that call};
  `timed`: {(method, call number): worker to kill from a timer 0-30 ms into that call,
  while it steps (or just after it answered)}. Records each call's duration (`seconds`)
  and the envs seen (`envs`).
  """

  def __init__(self, monkeypatch, plan=None, timed=None, rng_seed: int = 0):
    self.plan, self.timed = plan or {}, timed or {}
    self.calls = collections.Counter()
    self.seconds: list[float] = []
    self.envs: list[vector_lib.ParallelEnvs] = []
    self.kills = 0
    rng = random.Random(rng_seed)
    for name in ("reset", "step"):
      original = getattr(vector_lib.ParallelEnvs, name)

      def wrapper(envs, *args, _name=name, _original=original, **kwargs):
        self.calls[_name] += 1
        key = (_name, self.calls[_name])
        if not self.envs or self.envs[-1] is not envs:
          self.envs.append(envs)
        for worker in self.plan.get(key, ()):
          _kill(envs, worker)
          self.kills += 1
        timer = None
        if key in self.timed:
          timer = threading.Timer(rng.uniform(0.0, 0.03), _kill, (envs, self.timed[key]))
          timer.start()
          self.kills += 1
        start = time.monotonic()
        try:
          return _original(envs, *args, **kwargs)
        finally:
          self.seconds.append(time.monotonic() - start)
          if timer is not None:
            timer.join()

      monkeypatch.setattr(vector_lib.ParallelEnvs, name, wrapper)


def _content(root: str) -> dict:
  """The dataset as {shard: (its episode ids, {id: {key: (dtype, shape, bytes)}})}: its
  arrays bit for bit (the shard files' bytes also hold the TFDS writer's feature order,
  which may differ from one process to the next)."""
  dataset = dataset_reader.open_dataset(root)
  out, position = {}, 0
  for shard in dataset.shards:
    episodes = {}
    for i in shard.episode_ids:
      episode = dataset.read_episode(position)
      assert int(dataset.episode_ids[position]) == int(i)
      episodes[int(i)] = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in episode.items()}
      position += 1
    out[shard.name] = ([int(i) for i in shard.episode_ids], episodes)
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
  """An uninterrupted collection of EPISODES episodes on 2 worker processes."""
  root = str(tmp_path_factory.mktemp("reference") / "dataset")
  assert random_policy.collect_random_parallel(TASK, root, EPISODES, SEED, num_envs=2,
                                               **COLLECT) == list(range(EPISODES))
  return root


@pytest.mark.slow
def test_collection_with_killed_workers_equals_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                    reference):
  # 3 kills per worker, its limit: a seeded reset (an episode's start), mid-episode, an
  # episode's last step, both workers at once, and from a timer while a worker steps.
  # Calls: reset 1 starts episodes 0-1, steps 1-10 play them, reset 2 starts 2-3, ...
  plan = {("reset", 2): [0], ("step", 4): [1], ("step", 20): [0], ("step", 25): [0, 1]}
  timed = {("step", 13): 1}
  injector = _Injector(monkeypatch, plan, timed)
  root = str(tmp_path / "dataset")
  assert random_policy.collect_random_parallel(TASK, root, EPISODES, SEED, num_envs=2,
                                               **COLLECT) == list(range(EPISODES))
  (envs,) = injector.envs
  assert injector.kills == 6 and envs.restarts == [3, 3]
  assert max(injector.seconds) < NOTICED_WITHIN_S
  assert _content(root) == _content(reference)
  record("env worker killed during collection", injector.kills)


@pytest.mark.slow
def test_collection_past_its_restarts_is_one_clear_error_and_loses_nothing(
    tmp_path, monkeypatch, reference):
  # Worker 1 killed 4 times: restarted 3 times, then the error. Episodes 0-3 ended before.
  plan = {("step", 22): [1], ("step", 24): [1], ("step", 26): [1], ("step", 28): [1]}
  injector = _Injector(monkeypatch, plan)
  root = str(tmp_path / "dataset")
  with pytest.raises(RuntimeError) as raised:
    random_policy.collect_random_parallel(TASK, root, EPISODES, SEED, num_envs=2, **COLLECT)
  message = str(raised.value)
  assert message.startswith(f"env 1 ({TASK}, seed {SEED + 5}): the worker process (pid ")
  assert "killed by signal SIGKILL; not restarted (max_restarts=3, all used: it was " \
         "restarted 3 times)" in message, message
  (envs,) = injector.envs
  assert envs.closed and envs.restarts == [0, 3]
  assert not [p for p in envs.processes if p.is_alive()]
  # Every episode that ended before the error is in the dataset, intact: the first two
  # shards of the uninterrupted collection.
  kept, want = _content(root), _content(reference)
  assert sorted(kept) == ["shard-00000", "shard-00001"]
  assert kept == {name: want[name] for name in kept}
  monkeypatch.undo()
  # The rerun collects the rest; the whole equals the uninterrupted collection.
  assert random_policy.collect_random_parallel(TASK, root, EPISODES, SEED, num_envs=2,
                                               **COLLECT) == [4, 5, 6, 7]
  assert _content(root) == _content(reference)
  record("env worker killed during collection", 3)  # the 3 restarts
  # The 4th kill: the one clear error, and the rerun's dataset is the uninterrupted one.
  record("env worker killed past its restarts", 1)


def _evaluate(num_envs: int = 2, episodes: int = 6) -> evaluate_lib.EvalResult:
  with vector_lib.ParallelEnvs(TASK, num_envs, seed=3, **SHORT) as envs:
    policy = evaluate_lib.RandomPolicy(envs.action_dim, seed=11)
    return evaluate_lib.evaluate(envs, policy, episodes, record_episodes=episodes)


@pytest.mark.slow
def test_evaluation_with_killed_workers_gives_identical_returns_and_frames(monkeypatch):
  reference = _evaluate()
  # Each env plays 3 episodes of 10 steps one after the other, reset without new seeds:
  # a restart replays the env's earlier episodes too. Reset 1 starts episodes 0-1, steps
  # 1-10 play them, reset 2 starts 2-3, ...
  plan = {("step", 3): [0], ("reset", 2): [1], ("step", 15): [0, 1], ("step", 30): [1]}
  timed = {("step", 24): 0}
  injector = _Injector(monkeypatch, plan, timed, rng_seed=1)
  result = _evaluate()
  (envs,) = injector.envs
  assert injector.kills == 6 and envs.restarts == [3, 3]
  assert max(injector.seconds) < NOTICED_WITHIN_S
  np.testing.assert_array_equal(result.returns, reference.returns)
  np.testing.assert_array_equal(result.lengths, reference.lengths)
  assert len(result.recorded) == len(reference.recorded) == 6
  for got, want in zip(result.recorded, reference.recorded):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  record("env worker killed during evaluation", injector.kills)


def test_a_replay_that_differs_or_a_broken_env_is_one_clear_error():
  with vector_lib.ParallelEnvs(TASK, 2, seed=0, **SHORT) as envs:
    envs.reset()
    for _ in range(3):
      envs.step(np.zeros((2, envs.action_dim)))
    # As if env 0 were not deterministic: its second answer differs on replay.
    command, arg, _ = envs._log[0][1]  # pylint: disable=protected-access
    envs._log[0][1] = (command, arg, b"\0" * 16)  # pylint: disable=protected-access
    _kill(envs, 0)
    with pytest.raises(RuntimeError, match=r"env 0 \(stickman_walk, seed 0\): the worker "
                       r"process \(pid \d+\) was killed by signal SIGKILL; restarted, but "
                       r"replaying its command 2 of 4 \(step\) gave a different time step "
                       r"than before: the environment is not deterministic"):
      envs.step(np.zeros((2, envs.action_dim)))
    assert envs.closed
  # A step before any reset fails in the worker: that environment is not replayable.
  with vector_lib.ParallelEnvs(TASK, 1, seed=0, **SHORT) as envs:
    with pytest.raises(RuntimeError, match="call reset"):
      envs.step(np.zeros((1, envs.action_dim)))
    _kill(envs, 0)
    with pytest.raises(RuntimeError, match=r"env 0 .*killed by signal SIGKILL; it cannot be "
                       r"restarted: its step command failed before"):
      envs.step(np.zeros((1, envs.action_dim)))
  record("env worker killed, replay not possible", 2)
