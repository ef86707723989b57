"""Plan2Explore's disagreement ensemble, its loss, intrinsic reward and reward normaliser.

The exploration collector (`data.collector='plan2explore'`, method.md §8) learns its actor-critic
in imagination on an intrinsic reward: how much an ensemble of one-step predictors of the
next frame's encoder embedding disagree about the imagined transition. States the world
model has rarely seen give high disagreement, so the policy seeks them out; its episodes
are the "exploration" part of the paper's datasets.

* Ensemble: `size` (5) independent MLPs `Linear(feat + A -> units) -> ReLU ->
  Linear(-> embed dim)`, stacked along a leading member axis.
* Loss: each member predicts `sg(embed_{t+1})` from `(sg(feat_t), action_{t+1})`; the
  loss is the mean over members and positions of the L2 norm of the error.
* Intrinsic reward of imagined step `i >= 1`: the unbiased variance across members of the
  predictions for `(feat_{i-1}, a_i)`, averaged over the embedding dims; 0 at step 0.
* Normaliser (method.md §1.10, StreamNorm with momentum 0.95): rewards are divided by an EMA of
  their mean absolute value (the first batch initialises it) and multiplied by a scale.

Deviation from the reference: the reference ran Plan2Explore with a DreamerV2 config (no
LayerNorm, Gaussian image and reward heads, trunc-normal actor, MSE critic, bias-free
Linears). Here it uses the same DreamerV3-style world model and actor-critic (twohot
critic, return EMA) as the task agent (`task_agent.py`), with the DreamerV2 config's
learning rates, actor entropy 0 and normaliser. Only the exploration actor-critic is
trained, and it is the one that acts.

    python experiments/main.py --config=configs/walker.py --mode=collect \\
        --config.data.collector=plan2explore
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
NORM_EPS = 1e-8


class _Member(nn.Module):
  """One predictor: `(..., F + A) -> (..., out)`."""
  units: int
  out: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(nn.Dense(self.units, dtype=self.dtype, name="hidden")(x.astype(self.dtype)))
    return nn.Dense(self.out, dtype=self.dtype, name="out")(h).astype(jnp.float32)


class Ensemble(nn.Module):
  """`size` independent members: `(feat (..., F), action (..., A)) -> (size, ..., out)`.

  The members' params are stacked: `params['members']['hidden']['kernel']` is
  `(size, F + A, units)`.
  """
  size: int = 5
  units: int = 1536
  out: int = 1536
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, feat: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([feat, action.astype(feat.dtype)], -1)
    members = nn.vmap(_Member, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=self.size)
    return members(self.units, self.out, self.dtype, name="members")(x)


def init_ensemble(ensemble: Ensemble, feat_dim: int, action_dim: int, key: jax.Array
                  ) -> Params:
  return ensemble.init(key, jnp.zeros((1, feat_dim)), jnp.zeros((1, action_dim)))["params"]


def prediction_loss(predictions: jax.Array, target: jax.Array) -> jax.Array:
  """Mean over members and positions of `||prediction - target||_2`.

  predictions `(M, ..., D)`, target `(..., D)` (already detached).
  """
  return jnp.mean(jnp.linalg.norm(predictions - target[None], axis=-1))


def ensemble_loss(ensemble: Ensemble, params: Params, feat: jax.Array, action: jax.Array,
                  embed: jax.Array, scale: float = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`scale *` the prediction loss of batch-major sequences.

  feat `(B, T, F)` (the posterior features), action `(B, T, A)` (row t: the action that
  led to frame t), embed `(B, T, D)` (the encoder's embeddings). Pairs
  `(feat_t, action_{t+1}) -> embed_{t+1}`; inputs and targets are detached, so only the
  ensemble learns from this loss.
  """
  sg = jax.lax.stop_gradient
  predictions = ensemble.apply({"params": params}, sg(feat[:, :-1]), sg(action[:, 1:]))
  loss = prediction_loss(predictions, sg(embed[:, 1:]))
  return scale * loss, {"ensemble_loss": loss}


def disagreement(predictions: jax.Array) -> jax.Array:
  """Unbiased variance across members (axis 0), mean over the last axis: `(M, ..., D) ->
  (...)`."""
  return jnp.mean(jnp.var(predictions, axis=0, ddof=1), axis=-1)


def intrinsic_reward(ensemble: Ensemble, params: Params, seq: dict[str, jax.Array]
                     ) -> jax.Array:
  """Raw intrinsic reward `(H + 1, N)` of an imagined sequence (time-major `feat`,
  `action`): 0 at step 0, then the disagreement about `(feat_{i-1}, a_i)`.

  Not detached: with dynamics backpropagation the actor's gradient flows through the
  (frozen) ensemble into the imagined features and actions.
  """
  predictions = ensemble.apply({"params": params}, seq["feat"][:-1], seq["action"][1:])
  rest = disagreement(predictions)
  return jnp.concatenate([jnp.zeros_like(rest[:1]), rest], 0)


def update_stream_norm(magnitude: jax.Array, reward: jax.Array, momentum: float,
                       first: jax.Array | bool) -> jax.Array:
  """The EMA of the batch's mean absolute reward; the first batch sets it (method.md §1.10)."""
  batch = jnp.mean(jnp.abs(jax.lax.stop_gradient(reward)))
  return jnp.where(first, batch, momentum * magnitude + (1.0 - momentum) * batch)


def apply_stream_norm(reward: jax.Array, magnitude: jax.Array, scale: float = 1.0
                      ) -> jax.Array:
  return reward / (magnitude + NORM_EPS) * scale


def exploration_reward(ensemble: Ensemble, params: Params, seq: dict[str, jax.Array],
                       magnitude: jax.Array, first: jax.Array | bool, *, momentum: float,
                       scale: float) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """Normalised intrinsic reward `(H + 1, N)`: updates the normaliser with this batch,
  then divides by it (as StreamNorm's `__call__`). Returns `(reward, new magnitude,
  metrics)`."""
  raw = intrinsic_reward(ensemble, params, seq)
  magnitude = update_stream_norm(magnitude, raw, momentum, first)
  sg = jax.lax.stop_gradient
  metrics = {"intrinsic_reward_mean": sg(jnp.mean(raw)), "intrinsic_reward_max": sg(jnp.max(raw)),
             "intrinsic_reward_norm": magnitude}
  return apply_stream_norm(raw, magnitude, scale), magnitude, metrics
