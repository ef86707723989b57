"""Pure train steps `(state, batch, rng) -> (state, metrics)` and their jitted, sharded form."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from genrl_jax import world_model as wm_lib
from genrl_jax.train import parallel
from genrl_jax.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def apply_gradients(state: TrainState, grads: Any, optimizer: optax.GradientTransformation,
                    loss: jax.Array) -> tuple[TrainState, jax.Array]:
  """One optimizer update; records the first step with a non-finite loss or gradient.

  Returns the new state and the pre-clip global gradient norm.
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


def world_model_train_step(state: TrainState, batch: Batch, rng: jax.Array, *,
                           model: wm_lib.WorldModel, optimizer: optax.GradientTransformation,
                           config: ml_collections.ConfigDict) -> tuple[TrainState, Metrics]:
  """One world-model update on a global batch `(B, T, ...)` (spec 2.7).

  `config` is `config.world_model`. Params are `state.params['world_model']`. The batch
  layout is checked when the step is traced (shapes are static), at no run-time cost.
  """
  wm_lib.check_batch(batch, model.action_dim)
  batch = dict(batch, is_first=batch["is_first"].astype(jnp.float32),
               reward=batch["reward"].astype(jnp.float32),
               action=batch["action"].astype(jnp.float32))

  def loss_fn(params):
    return wm_lib.world_model_loss(model, params["world_model"], batch, rng, config)

  (loss, (metrics, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state, grad_norm = apply_gradients(state, grads, optimizer, loss)
  return state, dict(metrics, model_grad_norm=grad_norm)


def jit_train_step(step_fn: StepFn, mesh: Mesh, state: TrainState, **static: Any) -> StepFn:
  """Jits `step_fn(state, batch, rng, **static)` for the mesh: state replicated and donated,
  batch split over the `data` axis, metrics replicated."""
  del state  # The shardings are uniform over the tree; kept for a later per-leaf layout.
  fn = functools.partial(step_fn, **static)
  rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))
