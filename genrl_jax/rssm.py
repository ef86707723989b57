"""Recurrent state-space model with 32x32 discrete latents (method.md §2.3).

`RSSM` is a pure linen description of the layers; the step and scan functions below drive
it with explicit params and keys, so that sampling, mode, and replaying recorded samples
(for parity with the reference) are all the same code path.

A latent state is a dict `{'deter': (..., H), 'stoch': (..., S, K), 'logit': (..., S, K)}`;
`feature = concat(stoch_flat, deter)` (stoch first, as the reference).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrl_jax import dists
from genrl_jax.nets import DenseNormAct, LayerNormGRU

State = dict[str, jax.Array]
Params = Any


class RSSM(nn.Module):
  """Prior: `[stoch, action] -> img_in -> GRU -> img_out -> img_dist`; posterior (if
  `posterior`): `embed -> obs_out -> obs_dist` (single-frame posterior, method.md §2.3), or
  `[deter, embed]` when `single_obs_posterior` is False."""
  deter: int = 1024
  hidden: int = 1024
  stoch: int = 32
  discrete: int = 32
  posterior: bool = True
  single_obs_posterior: bool = True
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.img_in = DenseNormAct(self.hidden, dtype=self.dtype)
    self.cell = LayerNormGRU(self.deter, dtype=self.dtype)
    self.img_out = DenseNormAct(self.hidden, dtype=self.dtype)
    self.img_dist = nn.Dense(self.stoch * self.discrete, dtype=self.dtype)
    if self.posterior:
      self.obs_out = DenseNormAct(self.hidden, dtype=self.dtype)
      self.obs_dist = nn.Dense(self.stoch * self.discrete, dtype=self.dtype)

  def __call__(self, stoch: jax.Array, deter: jax.Array, action: jax.Array,
               embed: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """Touches every layer (used for `init`). Returns (prior logit, posterior logit)."""
    new_deter = self.prior_deter(stoch, deter, action)
    post = self.post_logit(embed, new_deter) if self.posterior else None
    return self.prior_logit(new_deter), post

  def prior_deter(self, stoch: jax.Array, deter: jax.Array, action: jax.Array) -> jax.Array:
    flat = stoch.reshape(stoch.shape[:-2] + (-1,))
    x = self.img_in(jnp.concatenate([flat, action.astype(flat.dtype)], -1))
    return self.cell(x, deter)

  def prior_logit(self, deter: jax.Array) -> jax.Array:
    logit = self.img_dist(self.img_out(deter))
    return self._to_logit(logit)

  def post_logit(self, embed: jax.Array, deter: jax.Array) -> jax.Array:
    x = embed if self.single_obs_posterior else jnp.concatenate([deter, embed], -1)
    return self._to_logit(self.obs_dist(self.obs_out(x)))

  def _to_logit(self, flat: jax.Array) -> jax.Array:
    return flat.astype(jnp.float32).reshape(flat.shape[:-1] + (self.stoch, self.discrete))

  def img_step(self, prev: State, action: jax.Array, key: jax.Array | None = None) -> State:
    """One prior step. `key=None` takes the (straight-through) mode."""
    deter = self.prior_deter(prev["stoch"], prev["deter"], action)
    logit = self.prior_logit(deter)
    return {"deter": deter, "stoch": draw(logit, key), "logit": logit}

  def obs_step(self, prev: State, action: jax.Array, embed: jax.Array, is_first: jax.Array,
               key: jax.Array | None = None, recorded_stoch: jax.Array | None = None
               ) -> tuple[State, State]:
    """Posterior step for frame t given the action that preceded it.

    Where `is_first`, the previous state and action are zeroed first. `recorded_stoch`
    replays a given one-hot posterior sample with the straight-through gradient.
    Returns (post, prior).
    """
    keep = 1.0 - is_first.astype(jnp.float32)
    prev = jax.tree.map(lambda x: x * keep.reshape(keep.shape + (1,) * (x.ndim - keep.ndim)),
                        prev)
    action = action * keep[..., None]
    prior_key, post_key = (None, None) if key is None else jax.random.split(key)
    prior = self.img_step(prev, action, prior_key)
    logit = self.post_logit(embed, prior["deter"])
    if recorded_stoch is not None:
      stoch = dists.straight_through(recorded_stoch.astype(jnp.float32),
                                     dists.unimix_probs(logit))
    else:
      stoch = draw(logit, post_key)
    return {"deter": prior["deter"], "stoch": stoch, "logit": logit}, prior


def draw(logit: jax.Array, key: jax.Array | None) -> jax.Array:
  """Straight-through sample with `key`, or the straight-through mode when `key` is None."""
  return dists.onehot_mode(logit) if key is None else dists.onehot_sample(logit, key)


def initial_state(rssm: RSSM, batch_shape: tuple[int, ...]) -> State:
  """All-zero state (method.md §2.3: the world model's initial state is not learned)."""
  return {"deter": jnp.zeros(batch_shape + (rssm.deter,), jnp.float32),
          "stoch": jnp.zeros(batch_shape + (rssm.stoch, rssm.discrete), jnp.float32),
          "logit": jnp.zeros(batch_shape + (rssm.stoch, rssm.discrete), jnp.float32)}


def feature(state: State) -> jax.Array:
  """`concat(stoch_flat, deter)`, `(..., S*K + H)`."""
  stoch = state["stoch"]
  return jnp.concatenate([stoch.reshape(stoch.shape[:-2] + (-1,)), state["deter"]], -1)


def flat_stoch(state: State) -> jax.Array:
  stoch = state["stoch"]
  return stoch.reshape(stoch.shape[:-2] + (-1,))


def _step_keys(key: jax.Array | None, length: int) -> jax.Array | None:
  return None if key is None else jax.random.split(key, length)


def observe(rssm: RSSM, params: Params, embed: jax.Array, action: jax.Array,
            is_first: jax.Array, key: jax.Array | None = None,
            recorded_stoch: jax.Array | None = None, init: State | None = None
            ) -> tuple[State, State]:
  """Filter a batch-major sequence from the zero state (method.md §2.3 `observe`).

  embed `(B, T, E)`, action `(B, T, A)` (the action that preceded each frame), is_first
  `(B, T)`; optional recorded posterior samples `(B, T, S, K)`. Returns batch-major
  (post, prior) dicts of `(B, T, ...)`.
  """
  batch, length = embed.shape[:2]
  state = initial_state(rssm, (batch,)) if init is None else init
  xs = {"embed": jnp.swapaxes(embed, 0, 1), "action": jnp.swapaxes(action, 0, 1),
        "is_first": jnp.swapaxes(is_first, 0, 1), "key": _step_keys(key, length),
        "rec": None if recorded_stoch is None else jnp.swapaxes(recorded_stoch, 0, 1)}

  def step(prev, x):
    post, prior = rssm.apply({"params": params}, prev, x["action"], x["embed"], x["is_first"],
                             x["key"], x["rec"], method=RSSM.obs_step)
    return post, (post, prior)

  _, (post, prior) = jax.lax.scan(step, state, xs)
  swap = lambda tree: jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)
  return swap(post), swap(prior)


def imagine_with_actions(rssm: RSSM, params: Params, action: jax.Array, init: State,
                         key: jax.Array | None = None) -> State:
  """Prior rollout over a batch-major action sequence `(B, T, A)` from `init` `(B, ...)`.

  Returns the batch-major states after each action, `(B, T, ...)`.
  """
  length = action.shape[1]
  xs = {"action": jnp.swapaxes(action, 0, 1), "key": _step_keys(key, length)}

  def step(prev, x):
    state = rssm.apply({"params": params}, prev, x["action"], x["key"], method=RSSM.img_step)
    return state, state

  _, states = jax.lax.scan(step, init, xs)
  return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), states)
