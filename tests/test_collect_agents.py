"""Tests of the collection agents (genrl_jax/collect): Plan2Explore's ensemble, the task
agent's update, and online collection into a dataset (sources, interruption, resume)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genrl_jax import rssm
from genrl_jax.stages import data as data_stage
from genrl_jax.collect import online
from genrl_jax.collect import plan2explore as p2e
from genrl_jax.collect import task_agent
from genrl_jax.data import dataset as dataset_lib
from genrl_jax.data import dataset_reader
from genrl_jax.envs import vector as vector_lib
from genrl_jax.report.metrics import read_metrics
from genrl_jax.train import checkpoints
from synthetic import micro_config

TASK = "walker_walk"
# 0.5 s of simulated time: 10 agent steps (11 frames) per episode with action repeat 2.
ENV_KWARGS = dict(time_limit=0.5)


def _config(**overrides):
  """The micro config with a small agent: every collection test shares its compilations."""
  values = {
      "task": TASK, "data.collect_episodes": 4, "data.num_envs": 1,
      "batch_size": 4, "batch_length": 8,
      "behavior.actor.units": 32, "behavior.critic.units": 32,
      "behavior.actor.layers": 1, "behavior.critic.layers": 1,
      "agent.seed_steps": 10, "agent.horizon": 5, "agent.episodes_per_shard": 1,
      "agent.save_every": 15, "agent.log_every": 2, "agent.plan2explore.ensemble_units": 32,
  }
  values.update(overrides)
  return micro_config(**values)


def _shard_files(root):
  """{path: (mtime_ns, bytes)} of every file of the committed episode shards."""
  out = {}
  folder = os.path.join(root, dataset_lib.EPISODES_DIR)
  for shard in sorted(os.listdir(folder)):
    for dirpath, _, files in os.walk(os.path.join(folder, shard)):
      for name in files:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[path] = (os.stat(path).st_mtime_ns, f.read())
  return out


def _sources(root):
  return [s.metadata["source"] for s in dataset_reader.open_dataset(root).shards]


def test_dataset_plan2explore_intrinsic_reward_is_zero_first_then_the_ensemble_variance():
  ens = p2e.Ensemble(size=3, units=4, out=2)
  params = p2e.init_ensemble(ens, feat_dim=5, action_dim=2, key=jax.random.key(0))
  rng = np.random.default_rng(0)
  seq = {"feat": rng.normal(size=(4, 2, 5)).astype(np.float32),
         "action": rng.normal(size=(4, 2, 2)).astype(np.float32)}
  reward = np.asarray(p2e.intrinsic_reward(ens, params, seq))
  assert reward.shape == (4, 2)
  np.testing.assert_array_equal(reward[0], 0.0)
  # By hand: member m maps x = [feat_{i-1}, a_i] through relu(x W1 + b1) W2 + b2.
  w = jax.tree.map(np.asarray, params["members"])
  x = np.concatenate([seq["feat"][:-1], seq["action"][1:]], -1)
  preds = np.stack([
      np.maximum(x @ w["hidden"]["kernel"][m] + w["hidden"]["bias"][m], 0.0)
      @ w["out"]["kernel"][m] + w["out"]["bias"][m] for m in range(3)])
  mean = preds.mean(0)
  by_hand = ((preds - mean) ** 2).sum(0) / (3 - 1)  # unbiased variance over members
  np.testing.assert_allclose(reward[1:], by_hand.mean(-1), rtol=1e-5, atol=1e-7)
  assert (reward[1:] > 0).all()

  # StreamNorm(0.95): the first batch sets the magnitude, later ones move it by 5%.
  normed, mag, _ = p2e.exploration_reward(ens, params, seq, jnp.float32(7.0), True,
                                          momentum=0.95, scale=1.0)
  np.testing.assert_allclose(float(mag), np.abs(reward).mean(), rtol=1e-5)
  np.testing.assert_allclose(np.abs(np.asarray(normed)).mean(), 1.0, rtol=1e-4)
  _, mag2, _ = p2e.exploration_reward(ens, params, seq, jnp.float32(7.0), False,
                                      momentum=0.95, scale=2.0)
  np.testing.assert_allclose(float(mag2), 0.95 * 7.0 + 0.05 * np.abs(reward).mean(), rtol=1e-5)


def test_dataset_plan2explore_ensemble_loss_decreases_on_a_fixed_batch():
  ens = p2e.Ensemble(size=5, units=32, out=6)
  rng = np.random.default_rng(1)
  feat = rng.normal(size=(4, 6, 10)).astype(np.float32)
  action = rng.uniform(-1, 1, (4, 6, 3)).astype(np.float32)
  # A learnable target: embed_{t+1} is a fixed function of (feat_t, action_{t+1}).
  mix = rng.normal(size=(13, 6)).astype(np.float32) / 4
  embed = np.zeros((4, 6, 6), np.float32)
  embed[:, 1:] = np.tanh(np.concatenate([feat[:, :-1], action[:, 1:]], -1) @ mix)
  params = p2e.init_ensemble(ens, 10, 3, jax.random.key(1))
  loss_fn = lambda p, f: p2e.ensemble_loss(ens, p, f, action, embed)[0]
  # Inputs and targets are detached: only the ensemble learns from this loss.
  assert float(jnp.abs(jax.grad(loss_fn, argnums=1)(params, feat)).max()) == 0.0
  opt = optax.adam(3e-3)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p, feat)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s, loss

  state = opt.init(params)
  losses = []
  for _ in range(60):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.slow
def test_dataset_task_agent_actor_critic_update_improves_the_imagined_return():
  config = _config(**{"agent.dreamer.actor_lr": 3e-3, "agent.dreamer.critic_lr": 3e-3})
  settings = task_agent.agent_settings(config, "dreamer")
  modules = task_agent.build_modules(settings, 6)
  state = task_agent.init_state(settings, 6, task_agent.init_key(0))
  model = modules.model
  n = 16
  stoch = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (n, model.stoch), 0,
                                            model.discrete), model.discrete)
  starts = dict(rssm.initial_state(model.rssm_def(), (n,)), stoch=stoch)

  def toy_reward(seq):  # rewards the first action dimension
    return seq["action"][..., 0], jnp.float32(1.0), {}

  @jax.jit
  def update(state, key):
    return task_agent.actor_critic_update(
        state, starts, key, state.params["world_model"], toy_reward, modules=modules,
        settings=settings)

  wm_before = state.params["world_model"]
  rewards = []
  for i in range(30):
    state, metrics = update(state, jax.random.key(i))
    rewards.append(float(metrics["imag_reward_mean"]))
  assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.3, rewards[::5]
  assert int(state.nonfinite_step) == -1
  # The behaviour update leaves the world model as it was.
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), wm_before,
                                          state.params["world_model"])))


@pytest.mark.slow
def test_dataset_collection_with_dreamer_agent_writes_episodes_with_its_source(tmp_path):
  config = _config()
  workdir = str(tmp_path / "run")
  result = online.collect_with_agent(config, workdir, collector="dreamer",
                                     env_kwargs=ENV_KWARGS, progress=False)
  root = os.path.join(workdir, "dataset")
  dataset = dataset_reader.open_dataset(root)
  assert dataset.num_episodes == 4 and sorted(dataset.episode_ids.tolist()) == [0, 1, 2, 3]
  assert result.new_episode_ids == [0, 1, 2, 3] and result.resumed_from is None
  assert dataset.lengths.tolist() == [11] * 4
  assert len(dataset.shards) == 4  # agent.episodes_per_shard = 1
  assert _sources(root) == [{"collector": "dreamer", "task": TASK, "seed": config.seed}] * 4
  # Seed phase: 10 random steps, then one update every 5 agent steps from the replay.
  assert result.agent_steps == 40 and result.updates == (40 - 10) // 5 + 1
  ckpt = checkpoints.Checkpointer(os.path.join(workdir, "collector", "dreamer"),
                                  save_every=1, keep=1, config={})
  assert ckpt.latest_step() == 40
  ckpt.close()
  rows = read_metrics(workdir, "collect_dreamer")
  assert rows and all(np.isfinite(r["model_loss"]) and np.isfinite(r["imag_actor_loss"])
                      for r in rows)
  episodes = read_metrics(workdir, "collect_dreamer_episodes")
  np.testing.assert_allclose([e["episode_return"] for e in episodes], result.returns)
  # Nothing left to do: a rerun collects nothing.
  again = online.collect_with_agent(config, workdir, collector="dreamer",
                                    env_kwargs=ENV_KWARGS, progress=False)
  assert again.new_episode_ids == [] and dataset_reader.open_dataset(root).num_episodes == 4


@pytest.mark.slow
def test_dataset_collection_interrupted_keeps_episodes_and_resumes_from_the_agent(
    tmp_path, monkeypatch):
  config = _config()
  workdir = str(tmp_path / "run")
  root = os.path.join(workdir, "dataset")
  original = vector_lib.SerialEnvs.step
  calls = []

  def interrupted(self, actions, indices=None):
    calls.append(1)
    if len(calls) == 26:  # Ctrl-C in the middle of the third episode
      raise KeyboardInterrupt
    return original(self, actions, indices)

  monkeypatch.setattr(vector_lib.SerialEnvs, "step", interrupted)
  with pytest.raises(KeyboardInterrupt):
    online.collect_with_agent(config, workdir, collector="dreamer", env_kwargs=ENV_KWARGS,
                              progress=False)
  monkeypatch.setattr(vector_lib.SerialEnvs, "step", original)
  # The two finished episodes are in the dataset, the agent saved at its 25th step.
  assert sorted(dataset_reader.existing_episode_ids(root)) == [0, 1]
  ckpt_dir = os.path.join(workdir, "collector", "dreamer")
  assert checkpoints.Checkpointer(ckpt_dir, save_every=1, keep=1, config={}).latest_step() == 25
  saved = checkpoints.restore_subtree(ckpt_dir, ("step",))
  assert int(saved) == (25 - 10) // 5 + 1
  before = _shard_files(root)

  result = online.collect_with_agent(config, workdir, collector="dreamer",
                                     env_kwargs=ENV_KWARGS, progress=False)
  assert result.resumed_from == 25
  assert result.new_episode_ids == [2, 3]  # the unfinished third episode is lost
  assert result.agent_steps == 45 and result.updates == int(saved) + 4
  dataset = dataset_reader.open_dataset(root)
  assert sorted(dataset.episode_ids.tolist()) == [0, 1, 2, 3]
  assert _sources(root) == [{"collector": "dreamer", "task": TASK, "seed": config.seed}] * 4
  after = _shard_files(root)
  assert {p: after[p] for p in before} == before  # earlier shards were not rewritten


@pytest.mark.slow
def test_dataset_collection_with_plan2explore_through_run_collect(tmp_path, monkeypatch):
  config = _config(**{"data.collector": "plan2explore", "data.num_envs": 2,
                      "data.collect_episodes": 5})
  workdir = str(tmp_path / "run")
  make_envs = online._make_envs  # pylint: disable=protected-access
  monkeypatch.setattr(online, "_make_envs", functools.partial(
      lambda task, n, seed, cfg, _, make: make(task, n, seed, cfg, ENV_KWARGS),
      make=make_envs))
  root = data_stage.collect(config, workdir, progress=False)
  assert root == os.path.join(workdir, "dataset")
  dataset = dataset_reader.open_dataset(root)
  # Two environments, five episodes: no more are started than are missing.
  assert sorted(dataset.episode_ids.tolist()) == [0, 1, 2, 3, 4]
  assert {json.dumps(s, sort_keys=True) for s in _sources(root)} == {json.dumps(
      {"collector": "plan2explore", "task": TASK, "seed": config.seed}, sort_keys=True)}
  rows = read_metrics(workdir, "collect_plan2explore")
  assert rows
  for r in rows:
    assert np.isfinite(r["ensemble_loss"]) and r["ensemble_loss"] > 0
    assert r["intrinsic_reward_mean"] > 0 and np.isfinite(r["imag_actor_loss"])
  assert os.path.isdir(os.path.join(workdir, "collector", "plan2explore"))

  with config.unlocked():
    config.data.collector = "expert"
  with pytest.raises(ValueError, match="expected 'random', 'dreamer'"):
    data_stage.collect(config, workdir, progress=False)


def test_dataset_agent_collection_refuses_a_multi_process_job(tmp_path, monkeypatch):
  config = _config(**{"data.collector": "dreamer"})
  root = str(tmp_path / "dataset")
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  with pytest.raises(RuntimeError, match="collects in a single process"):
    data_stage.collect(config, str(tmp_path), progress=False)
  assert not os.path.exists(root)  # refused before anything was written
  # A complete dataset needs no collector: every process goes on.
  with config.unlocked():
    config.data.collect_episodes = 0
  assert data_stage.collect(config, str(tmp_path), progress=False) == root
