"""Generic pieces of pure train steps `(state, batch, rng) -> (state, metrics)`: one
optimizer update with non-finite tracking, and the jitted, sharded form of a step. The
model-specific steps live with their models (`genrl_jax.mfwm.train_step`)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_updates(optimizer: optax.GradientTransformation, grads: Any,
                  opt_state: optax.OptState, params: Any) -> tuple[Any, optax.OptState]:
  """One optimizer step: `(new params, new optimizer state)`."""
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def first_nonfinite(nonfinite_step: jax.Array, step: jax.Array, loss: jax.Array,
                    grad_norm: jax.Array) -> jax.Array:
  """`step` if it is the first whose loss or gradient norm is not finite, else
  `nonfinite_step` (-1 while all were finite)."""
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  return jnp.where((nonfinite_step < 0) & ~finite, step, nonfinite_step)


def apply_gradients(state: TrainState, grads: Any, optimizer: optax.GradientTransformation,
                    loss: jax.Array) -> tuple[TrainState, jax.Array]:
  """One optimizer update; records the first step with a non-finite loss or gradient.

  Returns the new state and the pre-clip global gradient norm over all parameters.
  """
  grad_norm = optax.tree.norm(grads)
  params, opt_state = apply_updates(optimizer, grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      nonfinite_step=first_nonfinite(state.nonfinite_step, state.step, loss, grad_norm))
  return new_state, grad_norm


def jit_train_step(step_fn: StepFn, mesh: Mesh, **static: Any) -> StepFn:
  """Jits `step_fn(state, batch, rng, **static)` for the mesh: state replicated and donated,
  batch split over the `data` axis, metrics replicated."""
  fn = functools.partial(step_fn, **static)
  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))
