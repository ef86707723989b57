"""The generic train state (`TrainState`: step, params, optimizer state) and the key of each
update (`step_rng`). A learner with more state defines its own pytree beside it (e.g.
`behavior.learner.BehaviorState`)."""

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


def step_rng(seed: int, step: int | jax.Array) -> jax.Array:
  """The key of one update, folded from `(seed, step)` so a resumed run draws the same."""
  return jax.random.fold_in(jax.random.key(seed), step)
