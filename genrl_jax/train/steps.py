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

from genrl_jax.train import parallel
from genrl_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_gradients(state: TrainState, grads: Any, optimizer: optax.GradientTransformation,
                    loss: jax.Array) -> tuple[TrainState, jax.Array]:
  """One optimizer update; records the first step with a non-finite loss or gradient.

  Returns the new state and the pre-clip global gradient norm over all parameters.
  """
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  nonfinite_step = jnp.where((state.nonfinite_step < 0) & ~finite, state.step,
                             state.nonfinite_step)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            nonfinite_step=nonfinite_step)
  return new_state, grad_norm


def jit_train_step(step_fn: StepFn, mesh: Mesh, **static: Any) -> StepFn:
  """Jits `step_fn(state, batch, rng, **static)` for the mesh: state replicated and donated,
  batch split over the `data` axis, metrics replicated."""
  fn = functools.partial(step_fn, **static)
  rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))
