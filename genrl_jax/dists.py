"""Distributions used by the world model and its heads, as pure functions on arrays.

All functions compute in float32 whatever the compute dtype of the network that produced
their inputs (method.md §2.8: distributions stay float32).

* One-hot categorical latents with 1% unimix and straight-through gradients (method.md §1.5).
* Two-hot regression over 255 symlog buckets (method.md §1.4).
* The "MSE" image distribution (method.md §1.3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

UNIMIX = 0.01
NUM_BUCKETS = 255


# --- symlog ---------------------------------------------------------------------------


def symlog(x: jax.Array) -> jax.Array:
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


# --- one-hot categorical with unimix --------------------------------------------------


def unimix_probs(logit: jax.Array, unimix: float = UNIMIX) -> jax.Array:
  """Mixed probabilities `(1 - unimix) softmax(logit) + unimix / K` over the last axis."""
  logit = logit.astype(jnp.float32)
  k = logit.shape[-1]
  return (1.0 - unimix) * jax.nn.softmax(logit, axis=-1) + unimix / k


def unimix_log_probs(logit: jax.Array, unimix: float = UNIMIX) -> jax.Array:
  """Log of the (renormalised) mixed probabilities: the distribution's own logits."""
  probs = unimix_probs(logit, unimix)
  probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
  return jnp.log(probs)


def onehot_sample(logit: jax.Array, key: jax.Array, unimix: float = UNIMIX) -> jax.Array:
  """Straight-through one-hot sample, `(..., S, K) -> (..., S, K)`.

  The value is exactly one-hot; the gradient is that of the mixed probabilities.
  """
  probs = unimix_probs(logit, unimix)
  index = jax.random.categorical(key, jnp.log(probs), axis=-1)
  sample = jax.nn.one_hot(index, logit.shape[-1], dtype=jnp.float32)
  return straight_through(sample, probs)


def straight_through(sample: jax.Array, probs: jax.Array) -> jax.Array:
  """`sample + (probs - sg(probs))`: the bracket is exactly zero, so the value is `sample`."""
  return sample + (probs - jax.lax.stop_gradient(probs))


def onehot_mode(logit: jax.Array, unimix: float = UNIMIX) -> jax.Array:
  """One-hot of the argmax, straight-through via the mixed log-probabilities (method.md §1.5)."""
  log_probs = unimix_log_probs(logit, unimix)
  mode = jax.nn.one_hot(jnp.argmax(log_probs, axis=-1), logit.shape[-1], dtype=jnp.float32)
  return mode + (log_probs - jax.lax.stop_gradient(log_probs))


def categorical_kl(lhs_logit: jax.Array, rhs_logit: jax.Array, unimix: float = UNIMIX
                   ) -> jax.Array:
  """KL(lhs || rhs) of the mixed distributions, summed over the last two axes `(S, K)`."""
  lhs_lp = unimix_log_probs(lhs_logit, unimix)
  rhs_lp = unimix_log_probs(rhs_logit, unimix)
  return jnp.sum(jnp.exp(lhs_lp) * (lhs_lp - rhs_lp), axis=(-2, -1))


def categorical_entropy(logit: jax.Array, unimix: float = UNIMIX) -> jax.Array:
  """Entropy of the mixed distribution, summed over the last two axes `(S, K)`."""
  lp = unimix_log_probs(logit, unimix)
  return -jnp.sum(jnp.exp(lp) * lp, axis=(-2, -1))


# --- two-hot over symlog buckets ------------------------------------------------------


def _torch_linspace_buckets(low: float = -20.0, high: float = 20.0,
                            num: int = NUM_BUCKETS) -> np.ndarray:
  # torch.linspace fills the first half forwards from `low` and the second half backwards
  # from `high` with a float32 step; plain float32 linspace differs in the last bit.
  step = np.float32((high - low) / (num - 1))
  i = np.arange(num, dtype=np.float64)
  half = num // 2
  fwd = np.float32(low + np.float64(step) * i)
  bwd = np.float32(high - np.float64(step) * (num - 1 - i))
  return np.where(i < half, fwd, bwd).astype(np.float32)


BUCKETS = _torch_linspace_buckets()


def twohot_encode(x: jax.Array, buckets: jax.Array | np.ndarray = BUCKETS) -> jax.Array:
  """Two-hot target over the symlog buckets, `(...,) -> (..., 255)`."""
  buckets = jnp.asarray(buckets, jnp.float32)
  n = buckets.shape[0]
  y = symlog(x.astype(jnp.float32))[..., None]
  below = jnp.sum((buckets <= y).astype(jnp.int32), axis=-1) - 1
  above = n - jnp.sum((buckets > y).astype(jnp.int32), axis=-1)
  below = jnp.clip(below, 0, n - 1)
  above = jnp.clip(above, 0, n - 1)
  equal = below == above
  dist_below = jnp.where(equal, 1.0, jnp.abs(buckets[below] - y[..., 0]))
  dist_above = jnp.where(equal, 1.0, jnp.abs(buckets[above] - y[..., 0]))
  total = dist_below + dist_above
  w_below = dist_above / total
  w_above = dist_below / total
  return (jax.nn.one_hot(below, n) * w_below[..., None]
          + jax.nn.one_hot(above, n) * w_above[..., None])


def twohot_log_prob(logits: jax.Array, x: jax.Array,
                    buckets: jax.Array | np.ndarray = BUCKETS) -> jax.Array:
  """`sum(twohot(x) * log_softmax(logits))`, logits `(..., 255)`, x `(...)` -> `(...)`."""
  target = twohot_encode(x, buckets)
  return jnp.sum(target * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def twohot_mean(logits: jax.Array, buckets: jax.Array | np.ndarray = BUCKETS) -> jax.Array:
  """`symexp(sum(softmax(logits) * buckets))`, `(..., 255) -> (...)`."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return symexp(jnp.sum(probs * jnp.asarray(buckets, jnp.float32), axis=-1))


# --- images ---------------------------------------------------------------------------


def mse_log_prob(mean: jax.Array, target: jax.Array, event_dims: int = 3) -> jax.Array:
  """`-sum (mean - target)^2` over the last `event_dims` axes (no 1/2, no constant)."""
  diff = mean.astype(jnp.float32) - target.astype(jnp.float32)
  return -jnp.sum(jnp.square(diff), axis=tuple(range(-event_dims, 0)))
