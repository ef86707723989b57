"""Evaluation of policies in the environments: returns, episode bookkeeping, normalised
scores and recorded frames."""

from __future__ import annotations

import numpy as np
import pytest

from genrl_jax.envs import evaluate as evaluate_lib
from genrl_jax.envs import make_env
from genrl_jax.envs import parallel as parallel_lib

TASK = "stickman_walk"
KW = dict(fast_render=True, env_kwargs={"time_limit": 0.5})  # 20 control steps of 25 ms


class _Scripted:
  """Action = a fixed function of (env row, step within episode): replayable by hand."""

  def __init__(self, action_dim):
    self.action_dim = action_dim

  def initial_carry(self, num):
    return np.zeros(num, np.int64)

  def __call__(self, obs, carry, step):
    carry = np.where(obs["is_first"], 0, carry)
    actions = np.sin(0.3 * carry[:, None] + np.arange(self.action_dim)[None]).astype(np.float32)
    return actions, carry + 1


def _by_hand(seed: int, episodes: int, action_dim: int) -> list[float]:
  """Episodes played one after the other on one env, as the reference evaluates."""
  env = make_env(TASK, seed=seed, fast_render=True, time_limit=0.5)
  out = []
  for _ in range(episodes):
    env.reset()
    total, t, last = 0.0, 0, False
    while not last:
      ts = env.step(np.sin(0.3 * t + np.arange(action_dim)).astype(np.float32))
      total, t, last = total + float(ts["reward"]), t + 1, ts["is_last"]
    out.append(total)
  return out


def test_evaluate_one_env_is_the_reference_protocol_and_normalises_scores():
  with parallel_lib.SerialEnvs(TASK, 1, seed=3, **KW) as envs:
    result = evaluate_lib.evaluate(envs, _Scripted(envs.action_dim), 3, record_episodes=2)
  expected = _by_hand(3, 3, envs.action_dim)
  np.testing.assert_allclose(result.returns, expected, rtol=1e-6)
  np.testing.assert_array_equal(result.lengths, [10, 10, 10])  # 20 steps / action repeat 2
  assert result.mean_return == pytest.approx(np.mean(expected))
  assert result.normalized_score == pytest.approx((np.mean(expected) - 35) / (960 - 35))
  assert [f.shape for f in result.frames] == [(11, 64, 64, 3)] * 2
  assert result.summary()["episodes"] == 3


def test_evaluate_spreads_episodes_over_envs_and_resets_the_policy_rows():
  with parallel_lib.SerialEnvs(TASK, 2, seed=3, **KW) as envs:
    result = evaluate_lib.evaluate(envs, _Scripted(envs.action_dim), 3)
  # Env 0 (seed 3) plays episodes 0 and 2, env 1 (seed 4) episode 1.
  first, third = _by_hand(3, 2, envs.action_dim)
  (second,) = _by_hand(4, 1, envs.action_dim)
  np.testing.assert_allclose(result.returns, [first, second, third], rtol=1e-6)


def test_evaluate_random_policy_on_parallel_envs_gives_finite_bounded_returns():
  with parallel_lib.make_envs(TASK, 2, seed=0, parallel=True, **KW) as envs:
    result = evaluate_lib.evaluate(envs, evaluate_lib.RandomPolicy(envs.action_dim, 0), 2,
                                   record_episodes=0)
  assert result.returns.shape == (2,) and np.all(np.isfinite(result.returns))
  assert np.all((result.returns >= 0) & (result.returns <= 10 * 2)) and result.frames == []


def test_evaluate_refuses_no_episodes():
  with parallel_lib.SerialEnvs(TASK, 1, seed=0, **KW) as envs:
    with pytest.raises(ValueError, match="num_episodes=0"):
      evaluate_lib.evaluate(envs, evaluate_lib.RandomPolicy(envs.action_dim), 0)
