"""Behaviour-learning pieces on hand-computed cases (parity tests come with the full stage)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax.behavior import actor_critic as ac
from genrl_jax.behavior import reward as rw


def test_lambda_return_matches_the_recursion_by_hand():
  r = jnp.array([[1.0], [2.0], [3.0]])
  v = jnp.array([[0.5], [1.0], [1.5]])
  d = jnp.full((3, 1), 0.9)
  returns = ac.lambda_return(r, v, d, jnp.array([2.0]), 0.95)
  r2 = 3 + 0.9 * (0.05 * 2 + 0.95 * 2)
  r1 = 2 + 0.9 * (0.05 * 1.5 + 0.95 * r2)
  r0 = 1 + 0.9 * (0.05 * 1.0 + 0.95 * r1)
  np.testing.assert_allclose(returns[:, 0], [r0, r1, r2], rtol=1e-6)


def test_return_ema_moves_one_percent_towards_the_percentiles_with_scale_floor_one():
  returns = jnp.arange(101, dtype=jnp.float32)  # 5th percentile 5, 95th 95
  ema, offset, scale = ac.update_return_ema(jnp.zeros(2), returns)
  np.testing.assert_allclose(ema, [0.05, 0.95], rtol=1e-5)
  assert float(offset) == pytest.approx(0.05) and float(scale) == 1.0


def _sequences(t=17, n=4, s=2, k=3):
  onehot = lambda key: jax.nn.one_hot(jax.random.randint(key, (t, n, s), 0, k), k)
  agent = {"stoch": onehot(jax.random.key(1)), "logit": jnp.zeros((t, n, s, k))}
  target = {"stoch": onehot(jax.random.key(2)), "logit": jnp.zeros((t, n, s, k))}
  weights = jax.random.normal(jax.random.key(0), (s * k, 5))
  return agent, target, lambda x: x @ weights


def test_sequence_alignment_picks_the_best_window_and_waits_on_the_first_target():
  agent, target, project = _sequences()
  reward, info = rw.genrl_reward(agent, target, project)
  t, n = agent["stoch"].shape[:2]
  u = np.asarray(project(agent["stoch"].reshape(t, n, -1)))
  v = np.asarray(project(target["stoch"].reshape(t, n, -1)))
  score = lambda a, b: np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1),
                                                       np.linalg.norm(b, axis=-1)) ** 2
  align = np.stack([np.mean([score(u[o + i], v[i]) for i in range(8)], 0) for o in range(9)])
  best = align.argmax(0)
  expected = np.stack([score(u[i], v[np.maximum(i - best, 0), np.arange(n)]) for i in range(t)])
  np.testing.assert_allclose(info["align_score"], align, atol=1e-6)
  np.testing.assert_array_equal(info["best_index"], best)
  np.testing.assert_allclose(reward[..., 0], expected, atol=1e-6)
  assert reward.shape == (t, n, 1)


def test_score_functions_on_hand_computed_vectors():
  u, v = jnp.array([3.0, 4.0]), jnp.array([6.0, 8.0])
  assert float(rw.score("cosine", u, v)) == pytest.approx(1.0)
  assert float(rw.score("max_cosine", u, v)) == pytest.approx(50.0 / 100.0)
  assert float(rw.score("neg_mse", u, v)) == pytest.approx(-5.0 / np.sqrt(2.0))
  assert float(rw.score("exp_neg_mse", u, v)) == pytest.approx(np.exp(-5.0 / np.sqrt(2.0)))
  with pytest.raises(ValueError, match="score_fn='dot'"):
    rw.score("dot", u, v)
  agent, target, project = _sequences()
  with pytest.raises(ValueError, match="alignment='best'"):
    rw.genrl_reward(agent, target, project, alignment="best")
