"""One actor-critic update for the GenRL learner and the collection agents
(`behavior/actor_critic_update.py`): given the same reward (the world model's reward head),
task-agent updates and learner updates give the same actor, critic, optimizer state, slow
critic, return EMA, non-finite record and metrics."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from genrl_jax import mfwm as mfwm_lib
from genrl_jax.collect import task_agent
from genrl_jax.behavior import learner
from genrl_jax.behavior import starts as starts_lib
from genrl_jax.behavior.learner import BehaviorState
from synthetic import micro_config

ACTION_DIM = 6
NUM_STARTS = 16
TOL = dict(rtol=1e-5, atol=1e-6)
# Metrics only the learner logs (its reward normaliser is the identity).
LEARNER_ONLY = {"imag_reward_normed_mean", "imag_reward_normed_std"}


def _settings():
  # A slow critic mixed half-way every second update, so that both the copy and the
  # mixing fraction show in the comparison; unequal actor and critic rates.
  config = micro_config(**{
      "behavior.actor.units": 32, "behavior.critic.units": 32, "behavior.actor.layers": 1,
      "behavior.critic.layers": 1, "agent.horizon": 5, "agent.slow_target_every": 2,
      "agent.slow_target_fraction": 0.5, "agent.dreamer.actor_lr": 3e-3,
      "agent.dreamer.critic_lr": 1e-3})
  return task_agent.agent_settings(config, "dreamer")


def _starts(model, seed):
  """Uniform one-hot latents with a random deter `(NUM_STARTS, ...)`."""
  k_uni, k_deter = jax.random.split(jax.random.key(seed))
  s = starts_lib.uniform_latents(model, NUM_STARTS, k_uni)
  return dict(s, deter=jax.random.normal(k_deter, s["deter"].shape))


def _close(a, b, what):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, err_msg=what, **TOL), a, b)


@pytest.mark.slow
def test_task_agent_update_equals_the_learner_update_given_the_reward_head_reward():
  settings = _settings()
  modules = task_agent.build_modules(settings, ACTION_DIM)
  agent = task_agent.init_state(settings, ACTION_DIM, task_agent.init_key(0))
  # A random reward head (its output layer starts at zero): rewards that vary over the
  # imagined states, and an actor gradient through them.
  wm_params = agent.params["world_model"]
  leaves, tree = jax.tree.flatten(wm_params["reward_head"])
  keys = jax.random.split(jax.random.key(7), len(leaves))
  head = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])
  wm_params = {**wm_params, "reward_head": head}
  agent = agent.replace(params={**agent.params, "world_model": wm_params})

  # The learner, built its own way around the agent's actor, critic and world model.
  mfwm = mfwm_lib.MFWM(modules.model)
  behavior = learner.Behavior(modules.actor, modules.critic)
  optimizer = learner.make_optimizer(settings.behavior)
  state = BehaviorState.create({k: agent.params[k] for k in ("actor", "critic")}, optimizer,
                               prompt_target={})

  def head_reward(seq):  # the learner's reward_fn contract: (reward (H + 1, N), info)
    return task_agent.reward_head_reward(modules.model, wm_params, seq["feat"]), {}

  @jax.jit
  def agent_update(agent, starts, key):
    reward_fn = task_agent.make_reward_fn(agent, wm_params, modules, settings)
    agent, metrics = task_agent.actor_critic_update(agent, starts, key, wm_params, reward_fn,
                                                    modules=modules, settings=settings)
    return agent.replace(step=agent.step + 1), metrics  # as train_step counts

  @jax.jit
  def learner_update(state, starts, key):
    state, metrics, _ = learner.behavior_update(
        state, starts, key, {"world_model": wm_params}, mfwm=mfwm, behavior=behavior,
        optimizer=optimizer, config=settings, reward_fn=head_reward)
    return state, metrics

  for u in range(3):  # the slow critic is mixed after updates 0 and 2, not after 1
    starts, key = _starts(modules.model, u), jax.random.key(100 + u)
    critic_before, target_before = state.params["critic"], state.target_critic
    agent, agent_metrics = agent_update(agent, starts, key)
    state, learner_metrics = learner_update(state, starts, key)

    assert int(agent.step) == int(state.step) == u + 1
    for name in ("actor", "critic"):
      _close(agent.params[name], state.params[name], name)
    _close(agent.behavior_opt_state, state.opt_state, "optimizer state")
    _close(agent.target_critic, state.target_critic, "slow critic")
    _close(agent.return_ema, state.return_ema, "return EMA")
    assert int(agent.nonfinite_step) == int(state.nonfinite_step) == -1
    assert set(learner_metrics) == set(agent_metrics) | LEARNER_ONLY
    for name, value in agent_metrics.items():
      _close(value, learner_metrics[name], name)

    # Meaningful only if the rewards vary and the update moved things: the critic moved,
    # and the slow critic went half-way towards it on the mixing updates and held still on
    # the others.
    assert float(agent_metrics["imag_reward_std"]) > 0.01
    assert float(agent_metrics["imag_actor_grad_norm"]) > 0.01
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(state.params["critic"]), jax.tree.leaves(critic_before)))
    want = (jax.tree.map(lambda c, t: 0.5 * c + 0.5 * t, state.params["critic"], target_before)
            if u % 2 == 0 else target_before)
    _close(state.target_critic, want, "slow critic mixing")
  # The actor-critic update leaves the agent's world model as it was.
  jax.tree.map(np.testing.assert_array_equal, agent.params["world_model"], wm_params)
