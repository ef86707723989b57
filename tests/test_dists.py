"""Distributions on hand-computed cases (the parity tests cover the reference values)."""

import jax
import jax.numpy as jnp
import numpy as np

from genrl_jax import dists


def test_unimix_probs_mix_one_percent_uniform():
  logit = jnp.array([[0.0, 100.0, -100.0, 0.0]])
  probs = np.asarray(dists.unimix_probs(logit))
  np.testing.assert_allclose(probs, [[0.0025, 0.99 + 0.0025, 0.0025, 0.0025]], atol=1e-6)


def test_onehot_sample_is_exactly_one_hot_with_straight_through_gradient():
  logit = jax.random.normal(jax.random.key(0), (5, 4, 3))
  sample = dists.onehot_sample(logit, jax.random.key(1))
  assert set(np.unique(np.asarray(sample)).tolist()) == {0.0, 1.0}
  np.testing.assert_array_equal(np.asarray(sample).sum(-1), 1.0)
  grad = jax.grad(lambda l: jnp.sum(dists.onehot_sample(l, jax.random.key(1)) * 2.0))(logit)
  grad_probs = jax.grad(lambda l: jnp.sum(dists.unimix_probs(l) * 2.0))(logit)
  np.testing.assert_allclose(grad, grad_probs, atol=1e-7)


def test_onehot_sample_frequencies_follow_the_mixed_probabilities():
  logit = jnp.log(jnp.array([0.7, 0.2, 0.1]))
  keys = jax.random.split(jax.random.key(0), 20000)
  samples = jax.vmap(lambda k: dists.onehot_sample(logit, k))(keys)
  expected = 0.99 * np.array([0.7, 0.2, 0.1]) + 0.01 / 3
  np.testing.assert_allclose(np.asarray(samples).mean(0), expected, atol=0.01)


def test_categorical_kl_of_equal_logits_is_zero_and_matches_hand_computation():
  a = jnp.array([[[1.0, 0.0]]])
  b = jnp.array([[[0.0, 1.0]]])
  np.testing.assert_allclose(dists.categorical_kl(a, a), [0.0], atol=1e-7)
  p = 0.99 * np.exp([1, 0]) / np.exp([1, 0]).sum() + 0.005
  q = p[::-1]
  np.testing.assert_allclose(dists.categorical_kl(a, b), [np.sum(p * np.log(p / q))], rtol=1e-5)
  np.testing.assert_allclose(dists.categorical_entropy(a), [-np.sum(p * np.log(p))], rtol=1e-5)


def test_twohot_on_a_bucket_puts_all_mass_there_and_between_buckets_splits_linearly():
  b = dists.BUCKETS
  on = dists.twohot_encode(jnp.array([dists.symexp(jnp.array(b[200]))]))
  assert np.argmax(on[0]) == 200 and abs(float(on[0, 200]) - 1.0) < 1e-4
  y = 0.25 * b[100] + 0.75 * b[101]
  between = np.asarray(dists.twohot_encode(dists.symexp(jnp.array([y]))))[0]
  np.testing.assert_allclose(between[[100, 101]], [0.25, 0.75], atol=1e-3)
  assert abs(between.sum() - 1.0) < 1e-6
  beyond = np.asarray(dists.twohot_encode(jnp.array([1e12, -1e12])))
  assert beyond[0, -1] == 1.0 and beyond[1, 0] == 1.0


def test_twohot_mean_inverts_a_peaked_distribution_and_symlog_inverts_symexp():
  x = jnp.array([-30.0, -1.0, 0.0, 2.5, 400.0])
  np.testing.assert_allclose(dists.symexp(dists.symlog(x)), x, rtol=1e-5)
  logits = jnp.log(dists.twohot_encode(x) + 1e-30)  # softmax gives back the two-hot weights
  np.testing.assert_allclose(dists.twohot_mean(logits), x, rtol=1e-4, atol=1e-5)


def test_buckets_are_torch_linspace_symmetric_with_a_tiny_middle_value():
  b = dists.BUCKETS
  assert b.shape == (255,) and b.dtype == np.float32
  assert b[0] == -20.0 and b[-1] == 20.0
  assert 0 < b[127] < 1e-6  # torch's linspace leaves 7.45e-08 in the middle
