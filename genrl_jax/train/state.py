"""Train-state pytrees: one per learner, holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

Params = Any


@flax.struct.dataclass
class TrainState:
  """`step` counts applied updates; `params` is a dict of named parameter trees (for the
  MFWM: `{'world_model': ...}`, later also the connector and aligner); `nonfinite_step` is
  the first step whose loss or gradients were not finite (-1 while all were finite)."""
  step: jax.Array
  params: Params
  opt_state: optax.OptState
  nonfinite_step: jax.Array

  @classmethod
  def create(cls, params: Params, optimizer: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
               nonfinite_step=jnp.full((), -1, jnp.int32))


@flax.struct.dataclass
class BehaviorState:
  """One task's actor-critic: `params = {'actor', 'critic'}`, the slow target critic, the
  return-normalisation EMA (2,) and the prompt's target latents (time-major, computed once
  per task from the frozen MFWM)."""
  step: jax.Array
  params: Params
  target_critic: Params
  opt_state: optax.OptState
  return_ema: jax.Array
  prompt_target: dict[str, jax.Array]
  nonfinite_step: jax.Array

  @classmethod
  def create(cls, params: Params, optimizer: optax.GradientTransformation,
             prompt_target: dict[str, jax.Array]) -> "BehaviorState":
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               target_critic=jax.tree.map(jnp.array, params["critic"]),
               opt_state=optimizer.init(params), return_ema=jnp.zeros((2,), jnp.float32),
               prompt_target=prompt_target, nonfinite_step=jnp.full((), -1, jnp.int32))


def step_rng(seed: int, step: int | jax.Array) -> jax.Array:
  """The key of one update, folded from `(seed, step)` so a resumed run draws the same."""
  return jax.random.fold_in(jax.random.key(seed), step)
