"""Pure train steps `(state, batch, rng) -> (state, metrics)` and their jitted, sharded form."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from genrl_jax import connector as connector_lib
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import world_model as wm_lib
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


def mfwm_train_step(state: TrainState, batch: Batch, rng: jax.Array, *, mfwm: mfwm_lib.MFWM,
                    optimizer: optax.GradientTransformation,
                    config: ml_collections.ConfigDict) -> tuple[TrainState, Metrics]:
  """One MFWM update on a global batch `(B, T, ...)`.

  The world model learns end to end (spec 2.7); the connector and aligner learn on the
  detached posterior (spec 3.4), when the MFWM has them (then the batch also holds
  `vlm_embedding (B, T, E)`). Both losses are summed: they act on disjoint parameters.
  The batch layout is checked when the step is traced (shapes are static), at no run-time
  cost.
  """
  wm_lib.check_batch(batch, mfwm.world_model.action_dim)
  batch = dict(batch, is_first=batch["is_first"].astype(jnp.float32),
               reward=batch["reward"].astype(jnp.float32),
               action=batch["action"].astype(jnp.float32))
  if mfwm.has_connector and "vlm_embedding" not in batch:
    raise ValueError("batch has no 'vlm_embedding' (B, T, E): the connector and aligner "
                     "learn from per-step VLM embeddings")
  k_wm, k_conn = jax.random.split(rng)

  def loss_fn(params):
    loss, (metrics, post) = wm_lib.world_model_loss(mfwm.world_model, params["world_model"],
                                                     batch, k_wm, config.world_model)
    if mfwm.has_connector:
      conn_loss, conn_metrics = connector_lib.connector_loss(
          mfwm.connector, mfwm.aligner, params, batch["vlm_embedding"], post, k_conn,
          config.connector)
      loss = loss + conn_loss
      metrics = {**metrics, **conn_metrics}
    return loss, metrics

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state, _ = apply_gradients(state, grads, optimizer, loss)
  return state, {**metrics, **mfwm_lib.group_grad_norms(grads)}


def jit_train_step(step_fn: StepFn, mesh: Mesh, **static: Any) -> StepFn:
  """Jits `step_fn(state, batch, rng, **static)` for the mesh: state replicated and donated,
  batch split over the `data` axis, metrics replicated."""
  fn = functools.partial(step_fn, **static)
  rep, data = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, data, rep), out_shardings=(rep, rep),
                 donate_argnums=(0,))
