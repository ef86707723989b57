"""The multimodal foundation world model (MFWM): world model + connector + aligner.

`MFWM` bundles the three module descriptions; parameters live in one dict
`{'world_model': ..., 'connector': ..., 'aligner': ...}` (without a connector, just
`{'world_model': ...}`). The optimizer treats the world model and the connector+aligner as
two groups, each clipped to its own global norm, as the reference's two optimizer calls.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from genrl_jax import connector as connector_lib
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.train import optimizer as optimizer_lib

Params = Any
WORLD_MODEL_GROUP, CONNECTOR_GROUP = "world_model", "connector"


@dataclasses.dataclass(frozen=True)
class MFWM:
  world_model: wm_lib.WorldModel
  connector: connector_lib.Connector | None = None
  aligner: connector_lib.Aligner | None = None

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
  return MFWM(world_model, connector, connector_lib.Aligner(c.embed_dim, world_model.dtype))


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
  decays the connector's parameters twice per iteration (spec 3.4, section 12 item 6).
  """
  decay_times = 2 if config.connector.double_weight_decay else 1
  transforms = {
      WORLD_MODEL_GROUP: optimizer_lib.make_optimizer(config.world_model.optimizer),
      CONNECTOR_GROUP: optimizer_lib.make_optimizer(config.connector.optimizer, decay_times),
  }
  labels = lambda params: {k: jax.tree.map(lambda _, k=k: _group(k), v)
                           for k, v in params.items()}
  return optax.multi_transform(transforms, labels)


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
