"""The multimodal foundation world model (MFWM): world model + connector + aligner (the
model; the stage that trains it is `stages/mfwm.py`).

`MFWM` bundles the three module descriptions; parameters live in one dict
`{'world_model': ..., 'connector': ..., 'aligner': ...}` (without a connector, just
`{'world_model': ...}`). The optimizer treats the world model and the connector+aligner as
two groups, each clipped to its own global norm, as the reference's two optimizer calls.
`train_step` is one MFWM update; `build` gives a fresh replicated state and its jitted step.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from genrl_jax import aligner as aligner_lib
from genrl_jax import connector as connector_lib
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.train import checkpoints, steps
from genrl_jax.train import mesh as mesh_lib
from genrl_jax.train import optimizer as optimizer_lib
from genrl_jax.train.state import TrainState

Params = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
INIT_KEY_SALT = 0x5EED
WORLD_MODEL_GROUP, CONNECTOR_GROUP = "world_model", "connector"


@dataclasses.dataclass(frozen=True)
class MFWM:
  world_model: wm_lib.WorldModel
  connector: connector_lib.Connector | None = None
  aligner: aligner_lib.Aligner | None = None

  @property
  def has_connector(self) -> bool:
    return self.connector is not None


def make_mfwm(config: ml_collections.ConfigDict, action_dim: int, with_connector: bool = True
              ) -> MFWM:
  """Module descriptions from the config; the connector takes the world model's sizes."""
  world_model = wm_lib.make_world_model(config, action_dim)
  if not with_connector:
    return MFWM(world_model)
  c = config.connector
  connector = connector_lib.Connector(
      embed_dim=c.embed_dim, n_frames=c.n_frames, deter=world_model.deter,
      hidden=world_model.hidden, stoch=world_model.stoch, discrete=world_model.discrete,
      rescale_embeds=c.rescale_embeds, temporal_embeds=c.temporal_embeds,
      dtype=world_model.dtype)
  return MFWM(world_model, connector, aligner_lib.Aligner(c.embed_dim, world_model.dtype))


@functools.partial(jax.jit, static_argnums=0)  # as wm_lib.init_world_model, same values
def init_params(mfwm: MFWM, key: jax.Array) -> Params:
  k_wm, k_conn, k_align = jax.random.split(key, 3)
  params = {"world_model": wm_lib.init_world_model(mfwm.world_model, k_wm)}
  if mfwm.has_connector:
    action = jnp.zeros((1, mfwm.connector.action_dim))
    params["connector"] = mfwm.connector.init(k_conn, action)["params"]
    params["aligner"] = mfwm.aligner.init(k_align, jnp.zeros((1, mfwm.aligner.embed_dim)))[
        "params"]
  return params


def _group(name: str) -> str:
  return WORLD_MODEL_GROUP if name == "world_model" else CONNECTOR_GROUP


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """World model and connector+aligner as two groups (clip, decay and Adam each).

  `config.connector.double_weight_decay` reproduces the reference, whose shared Adam
  decays the connector's parameters twice per iteration (method.md §3.4, section 12 item 6).
  """
  decay_times = 2 if config.connector.double_weight_decay else 1
  transforms = {
      WORLD_MODEL_GROUP: optimizer_lib.make_optimizer(config.world_model.optimizer),
      CONNECTOR_GROUP: optimizer_lib.make_optimizer(config.connector.optimizer, decay_times),
  }
  return optimizer_lib.per_group(transforms, _group)


def group_grad_norms(grads: Params) -> dict[str, jax.Array]:
  """Pre-clip global norms per group, named as the reference logs them."""
  norms = {"model_grad_norm": optax.tree.norm(grads["world_model"])}
  rest = {k: v for k, v in grads.items() if k != "world_model"}
  if rest:
    norms["connector_model_grad_norm"] = optax.tree.norm(rest)
  return norms


def decode_prompt_video(mfwm: MFWM, params: Params, embedding: jax.Array, key: jax.Array,
                        num_frames: int = 16, denoise: bool = True) -> jax.Array:
  """Prompt embedding(s) `(E,)` or `(N, E)` -> decoded video `(N, T, 64, 64, 3)` uint8.

  The embedding is repeated over `num_frames` steps, optionally passed through the aligner
  (text prompts), rolled out by the connector with the mode (the initial stoch is sampled,
  as in the reference), and each latent is decoded by the world model.
  """
  if not mfwm.has_connector:
    raise ValueError("decode_prompt_video needs an MFWM with a connector")
  embedding = jnp.atleast_2d(jnp.asarray(embedding, jnp.float32))
  if embedding.shape[-1] != mfwm.connector.embed_dim:
    raise ValueError(f"prompt embedding has shape {tuple(embedding.shape)}; expected "
                     f"(N, {mfwm.connector.embed_dim})")
  embed = jnp.repeat(embedding[:, None], num_frames, axis=1)
  states = connector_lib.imagine(mfwm.connector, params, embed, key, sample=False,
                                 denoise=denoise, aligner=mfwm.aligner)
  image = mfwm.world_model.apply({"params": params["world_model"]}, rssm.flat_stoch(states),
                                 method=wm_lib.WorldModel.decode)
  return jnp.clip((image + 0.5) * 255.0, 0, 255).round().astype(jnp.uint8)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, mfwm: MFWM,
               optimizer: optax.GradientTransformation, config: ml_collections.ConfigDict
               ) -> tuple[TrainState, Metrics]:
  """One MFWM update on a global batch `(B, T, ...)`.

  The world model learns end to end (method.md §2.7); the connector and aligner learn on the
  detached posterior (method.md §3.4), when the MFWM has them (then the batch also holds
  `vlm_embedding (B, T, E)`). Both losses are summed: they act on disjoint parameters.
  The batch layout is checked when the step is traced (shapes are static), at no run-time
  cost.
  """
  wm_lib.check_batch(batch, mfwm.world_model.action_dim)
  batch = wm_lib.float_batch(batch)
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
  state, _ = steps.apply_gradients(state, grads, optimizer, loss)
  return state, {**metrics, **group_grad_norms(grads)}


def build(config: ml_collections.ConfigDict, action_dim: int, mesh: Mesh,
          with_connector: bool = True) -> tuple[MFWM, TrainState, steps.StepFn]:
  """The MFWM modules, a fresh state replicated over `mesh` (params from `config.seed`,
  the world model from `config.mfwm.init_world_model_from` when set) and the jitted
  `train_step`."""
  mfwm = make_mfwm(config, action_dim, with_connector)
  opt = make_optimizer(config)
  params = init_params(mfwm, jax.random.fold_in(jax.random.key(config.seed), INIT_KEY_SALT))
  if config.mfwm.init_world_model_from:
    params["world_model"] = restore_world_model(config.mfwm.init_world_model_from,
                                                params["world_model"])
  state = mesh_lib.replicate(TrainState.create(params, opt), mesh)
  step_fn = steps.jit_train_step(train_step, mesh, mfwm=mfwm, optimizer=opt, config=config)
  return mfwm, state, step_fn


def restore_world_model(directory: str, fresh: Params) -> Params:
  """The world-model params of the MFWM checkpoint in `directory`; they must have the
  shapes and dtypes of `fresh` (this config's)."""
  restored = checkpoints.restore_subtree(directory, ("params", "world_model"))
  want = jax.tree.map(lambda x: (x.shape, str(x.dtype)), fresh)
  have = jax.tree.map(lambda x: (x.shape, str(x.dtype)), restored)
  if want != have:
    raise checkpoints.CheckpointError(
        f"config.mfwm.init_world_model_from={directory!r}: its world model does not match the "
        "sizes of this config (world_model.* keys)")
  return restored


def load(directory: str) -> Params:
  """The params of the latest MFWM checkpoint in `directory`; it must have a connector
  (behaviours learn from prompts through it)."""
  if not os.path.isdir(directory):
    raise checkpoints.CheckpointError(f"no MFWM checkpoint directory {directory}; run the "
                                      "mfwm stage first")
  params = checkpoints.restore_subtree(directory, ("params",))
  if "connector" not in params:
    raise checkpoints.CheckpointError(
        f"the MFWM in {directory} has no connector (it was trained on episodes without "
        "'vlm_embedding'); behaviour learning from prompts needs one: embed the dataset "
        "(config.vlm.name) and train the MFWM again")
  return params
