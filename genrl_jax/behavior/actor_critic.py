"""Actor, critic and the pieces of one actor-critic update (method.md §1.6, §1.11, §1.12, §4).

Imagined sequences are time-major `(H + 1, N, ...)`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrl_jax import dists
from genrl_jax.nets import MLP

MIN_STD, MAX_STD = 0.1, 1.0
STD_OFFSET = 2.0
EMA_DECAY = 0.99
EMA_QUANTILES = (0.05, 0.95)


class Actor(nn.Module):
  """MLP trunk, then a mean head (tanh) and a std head (bounded to [0.1, 1]).

  `feat (..., F) -> (mean (..., A), std (..., A))`; samples are `mean + std * eps`,
  not squashed (method.md §1.6 'normal').
  """
  action_dim: int
  units: int = 1024
  layers: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = MLP(self.units, self.layers, dtype=self.dtype, name="trunk")(feat)
    mean = nn.Dense(self.action_dim, dtype=self.dtype, name="mean")(h).astype(jnp.float32)
    std = nn.Dense(self.action_dim, dtype=self.dtype, name="std")(h).astype(jnp.float32)
    return jnp.tanh(mean), (MAX_STD - MIN_STD) * jax.nn.sigmoid(std + STD_OFFSET) + MIN_STD


class Critic(nn.Module):
  """MLP with a zero-initialised twohot output: `feat (..., F) -> logits (..., 255)`."""
  units: int = 1024
  layers: int = 4
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array) -> jax.Array:
    out = MLP(self.units, self.layers, out=dists.NUM_BUCKETS, zero_init_out=True,
              dtype=self.dtype, name="mlp")(feat)
    return out.astype(jnp.float32)


def normal_log_prob(mean: jax.Array, std: jax.Array, x: jax.Array) -> jax.Array:
  """Independent Normal log-density summed over the last axis."""
  z = (x - mean) / std
  return jnp.sum(-0.5 * z ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def normal_entropy(std: jax.Array) -> jax.Array:
  return jnp.sum(0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(std), axis=-1)


def lambda_return(reward: jax.Array, value: jax.Array, pcont: jax.Array, bootstrap: jax.Array,
                  lambda_: float) -> jax.Array:
  """`R_t = r_t + pcont_t ((1 - lambda) V_{t+1} + lambda R_{t+1})`, `R_T = bootstrap`.

  reward, value, pcont `(T, ...)`, bootstrap `(...)`; time-major (method.md §1.12).
  """
  next_value = jnp.concatenate([value[1:], bootstrap[None]], 0)
  inputs = reward + pcont * next_value * (1.0 - lambda_)

  def step(carry, x):
    inp, disc = x
    ret = inp + disc * lambda_ * carry
    return ret, ret

  _, returns = jax.lax.scan(step, bootstrap, (inputs, pcont), reverse=True)
  return returns


def update_return_ema(ema: jax.Array, returns: jax.Array
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """EMA of the 5th/95th return percentiles (method.md §1.11), starting from zeros, no bias
  correction. Returns `(new_ema (2,), offset, scale)` with `scale >= 1`."""
  q = jnp.quantile(jax.lax.stop_gradient(returns).reshape(-1),
                   jnp.asarray(EMA_QUANTILES), method="linear")
  ema = (1.0 - EMA_DECAY) * q + EMA_DECAY * ema
  return ema, ema[0], jnp.maximum(ema[1] - ema[0], 1.0)


def actor_critic_losses(seq: dict[str, jax.Array], reward: jax.Array, slow_value: jax.Array,
                        actor_out: tuple[jax.Array, jax.Array], critic_logits: jax.Array,
                        return_ema: jax.Array, *, discount: float, lambda_: float,
                        actor_entropy: float
                        ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
  """The actor (dynamics backpropagation) and critic losses of one update (method.md §4.4).

  seq: the imagined sequence `(H + 1, N, ...)`; reward `(H + 1, N)` (the reward of each
  state); slow_value `(H + 1, N)`: the target critic's values of `seq['feat']` (not
  detached, so the actor's gradient flows through them); actor_out: (mean, std) of the
  actor on `sg(feat[:-2])`; critic_logits `(H, N, 255)` of the critic on `sg(feat[:-1])`.
  Returns `(actor_loss, critic_loss, new_return_ema, metrics)`.
  """
  pcont = jnp.full(reward.shape, discount, jnp.float32)
  target = lambda_return(reward[:-1], slow_value[:-1], pcont[:-1], slow_value[-1], lambda_)
  new_ema, offset, scale = update_return_ema(return_ema, target)
  normed = (target - offset) / scale
  entropy = normal_entropy(actor_out[1])
  # Imagination weights are all 1 (no discount head; method.md §4.3, section 12 item 11).
  actor_loss = -jnp.mean(normed[1:] + actor_entropy * entropy)
  critic_loss = -jnp.mean(dists.twohot_log_prob(critic_logits, jax.lax.stop_gradient(target)))
  sg = jax.lax.stop_gradient
  metrics = {
      "imag_reward_mean": jnp.mean(reward), "imag_reward_std": jnp.std(reward, ddof=1),
      "imag_critic_slow": jnp.mean(slow_value),
      "imag_critic": jnp.mean(dists.twohot_mean(critic_logits)),
      "imag_critic_target": jnp.mean(target),
      "imag_normed_target_mean": jnp.mean(normed),
      "imag_normed_target_std": jnp.std(normed, ddof=1),
      "imag_reward_ema_005": new_ema[0], "imag_reward_ema_095": new_ema[1],
      "imag_actor_ent": jnp.mean(entropy),
      "imag_actor_loss": actor_loss, "imag_critic_loss": critic_loss,
  }
  return actor_loss, critic_loss, sg(new_ema), {k: sg(v) for k, v in metrics.items()}

