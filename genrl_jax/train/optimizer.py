"""The reference's optimizer wrapper (method.md §1.9) built from optax parts.

Per update: clip the gradients to a global norm (torch's coefficient
`min(1, clip / (norm + 1e-6))`), multiply every parameter by `(1 - wd)` (decoupled and
*not* scaled by the learning rate), then take a plain Adam step (betas 0.9 / 0.999).
Because Adam's step does not depend on the parameters, this equals adding
`-wd * params` to the Adam update, which is how it is expressed here.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

TORCH_CLIP_EPS = 1e-6


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
  """`torch.nn.utils.clip_grad_norm_`: scale by `min(1, max_norm / (norm + 1e-6))`."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    coef = jnp.minimum(1.0, max_norm / (norm + TORCH_CLIP_EPS))
    return jax.tree.map(lambda g: (g * coef).astype(g.dtype), updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def lr_free_weight_decay(rate: float, times: int = 1) -> optax.GradientTransformation:
  """Adds what turns `p + update` into `p (1 - rate)^times + update` (method.md §1.9).

  `times=2` reproduces the reference's connector, whose parameters the shared Adam decays
  once in the world-model step and again in the connector step.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def decayed(p):
    for _ in range(times):  # one multiply per optimizer call, rounding as torch does
      p = p * (1.0 - rate)
    return p

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("lr_free_weight_decay needs the params passed to update()")
    # Written so that `p + update` rounds like torch's `p * (1 - rate) + adam_step`.
    return jax.tree.map(lambda u, p: (decayed(p) + u) - p, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: ml_collections.ConfigDict, decay_times: int = 1
                   ) -> optax.GradientTransformation:
  """Clip -> Adam -> lr-independent decay, from `{lr, eps, clip, wd}`."""
  parts = []
  if config.clip:
    parts.append(clip_by_global_norm_torch(config.clip))
  parts += [optax.scale_by_adam(b1=0.9, b2=0.999, eps=config.eps), optax.scale(-config.lr)]
  if config.wd:
    parts.append(lr_free_weight_decay(config.wd, decay_times))
  return optax.chain(*parts)


def per_group(transforms: dict[str, optax.GradientTransformation],
              group: Callable[[str], str] = lambda name: name) -> optax.GradientTransformation:
  """One transform per top-level parameter group, as the reference's separate `Optimizer`s
  (each clips to its own norm). The parameters are a dict; `group(key)` names the
  transform of the subtree `params[key]` (default: the key itself)."""
  labels = lambda params: {k: jax.tree.map(lambda _, g=group(k): g, v) for k, v in params.items()}
  return optax.multi_transform(transforms, labels)
