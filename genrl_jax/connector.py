"""The connector: from VLM embeddings to world-model latents (method.md §3).

* `Connector`: a prior-only RSSM (the world model's sizes) whose "actions" are the
  embeddings (times sqrt(E)) plus an n_frames temporal part, with a learned initial state.

Embedding sequences are batch-major `(B, T, E)`, unit norm. Latent states are the world
model's `{'deter', 'stoch', 'logit'}` dicts. The aligner (`genrl_jax.aligner`) learns in
the same loss (`connector_loss`) and may map embeddings before a rollout (`imagine`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from genrl_jax import dists, rssm
from genrl_jax.aligner import Aligner, aligner_loss, align
from genrl_jax.nets import MLP
from genrl_jax.world_model import kl_loss

Params = Any
State = rssm.State


class Connector(nn.Module):
  """Prior-only RSSM driven by embedding-actions, with a learned initial state.

  Params: `{'rssm': {img_in, cell, img_out, img_dist}, 'initial_net': MLP}`.
  """
  embed_dim: int = 512
  n_frames: int = 8
  deter: int = 1024
  hidden: int = 1024
  stoch: int = 32
  discrete: int = 32
  rescale_embeds: bool = True
  temporal_embeds: bool = False
  dtype: jnp.dtype = jnp.float32

  @property
  def action_dim(self) -> int:
    return self.embed_dim + self.n_frames

  def rssm_def(self) -> rssm.RSSM:
    """A standalone prior RSSM description whose params are `params['rssm']`."""
    return rssm.RSSM(deter=self.deter, hidden=self.hidden, stoch=self.stoch,
                     discrete=self.discrete, posterior=False, dtype=self.dtype, parent=None)

  def setup(self):
    self.rssm = rssm.RSSM(deter=self.deter, hidden=self.hidden, stoch=self.stoch,
                          discrete=self.discrete, posterior=False, dtype=self.dtype)
    # Linear -> LN -> SiLU -> Linear -> LN -> SiLU -> Linear (method.md §3.1 initial_state_pred).
    self.initial_net = MLP(self.hidden, 2, out=self.deter, dtype=self.dtype)

  def __call__(self, action: jax.Array) -> jax.Array:
    """Touches every layer (for `init`); action `(N, E + n_frames)`."""
    state = self.initial(action, None)
    return self.rssm.img_step(state, action)["logit"]

  def initial(self, action: jax.Array, key: jax.Array | None,
              recorded_stoch: jax.Array | None = None) -> State:
    """Learned initial state from the first embedding-action `(N, A)`.

    The stoch is sampled (method.md §3.3: always, whatever the rollout's `sample` flag);
    `key=None` takes the mode instead, `recorded_stoch` replays a given sample.
    """
    deter = self.initial_net(action).astype(jnp.float32)
    logit = self.rssm.prior_logit(deter)
    if recorded_stoch is not None:
      stoch = dists.straight_through(recorded_stoch.astype(jnp.float32),
                                     dists.unimix_probs(logit))
    else:
      stoch = rssm.draw(logit, key)
    return {"deter": deter, "stoch": stoch, "logit": logit}

  def img_step(self, prev: State, action: jax.Array, key: jax.Array | None = None) -> State:
    return self.rssm.img_step(prev, action, key)

  def prior_deter(self, stoch: jax.Array, deter: jax.Array, action: jax.Array) -> jax.Array:
    return self.rssm.prior_deter(stoch, deter, action)

  def prior_logit(self, deter: jax.Array) -> jax.Array:
    return self.rssm.prior_logit(deter)


def embedding_actions(connector: Connector, embed: jax.Array) -> jax.Array:
  """`(B, T, E) -> (B, T, E + n_frames)`: `embed * sqrt(E)` (if `rescale_embeds`) and the
  one-hot of `t mod n_frames`, multiplied by 0 unless `temporal_embeds` (method.md §3.2)."""
  e = embed.astype(jnp.float32)
  if connector.rescale_embeds:
    e = e * jnp.sqrt(jnp.float32(connector.embed_dim))
  t = jnp.arange(embed.shape[1]) % connector.n_frames
  temporal = jax.nn.one_hot(t, connector.n_frames) * float(connector.temporal_embeds)
  temporal = jnp.broadcast_to(temporal, embed.shape[:2] + (connector.n_frames,))
  return jnp.concatenate([e, temporal], -1)


def chunk_embeddings(embed: jax.Array, n_frames: int) -> jax.Array:
  """Each chunk of `n_frames` steps takes the embedding of its last step (method.md §3.4):
  `(B, T, E) -> (B, T, E)` with `out[:, t] = embed[:, (t // n) * n + n - 1]`."""
  batch, length = embed.shape[:2]
  last = embed[:, n_frames - 1::n_frames]
  return jnp.repeat(last, n_frames, axis=1)[:, :length]


def check_embeddings(embed: jax.Array, embed_dim: int, n_frames: int,
                     key: str = "vlm_embedding") -> None:
  """Shape checks (trace time): `(B, T, embed_dim)` with T a multiple of n_frames."""
  expected = f"(B, T, {embed_dim}) with T a multiple of n_frames={n_frames}"
  if embed.ndim != 3 or embed.shape[-1] != embed_dim:
    raise ValueError(f"batch[{key!r}] has shape {tuple(embed.shape)}; expected {expected}")
  if embed.shape[1] % n_frames:
    raise ValueError(f"batch[{key!r}] has {embed.shape[1]} steps; expected {expected}")


def connector_loss(connector: Connector, aligner: Aligner, params: Params, embed: jax.Array,
                   wm_post: State, key: jax.Array | None, config: ml_collections.ConfigDict,
                   recorded: dict[str, jax.Array] | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Aligner + connector loss on a batch (method.md §3.4).

  params `{'connector', 'aligner'}`; embed `(B, T, E)` per-step embeddings; wm_post the
  world model's posterior `(B, T, ...)` (detached here). `config` is `config.connector`.
  `recorded` may replay the reference's draws: `lafite_noise (B, T, E)`,
  `initial_stoch (B, S, K)`, `initkl_stoch (B, C, S, K)`.
  Returns `(aligner_loss + loss_scale * connector_kl_loss, metrics)`.
  """
  recorded = recorded or {}
  check_embeddings(embed, connector.embed_dim, connector.n_frames)
  batch, length = embed.shape[:2]
  n = connector.n_frames
  k_noise, k_init, k_initkl = (None,) * 3 if key is None else jax.random.split(key, 3)
  post = jax.lax.stop_gradient(wm_post)
  clean = chunk_embeddings(embed.astype(jnp.float32), n)

  # Aligner: denoise LaFiTe-corrupted embeddings back to the clean ones.
  eps = recorded.get("lafite_noise")
  if eps is None:
    eps = jax.random.normal(k_noise, clean.shape) if k_noise is not None else jnp.zeros_like(clean)
  align_loss = aligner_loss(aligner, params["aligner"], clean, eps, config.lafite_noise)

  # Connector: teacher-forced by the posterior stoch, driven by the clean embeddings.
  apply = lambda method, *a: connector.apply({"params": params["connector"]}, *a, method=method)
  actions = embedding_actions(connector, clean)
  init = apply(Connector.initial, actions[:, 0], k_init, recorded.get("initial_stoch"))
  stoch_in = jnp.concatenate([init["stoch"][:, None], post["stoch"][:, :-1]], 1)

  def step(deter, x):
    deter = apply(Connector.prior_deter, x["stoch"], deter, x["action"])
    return deter, deter

  xs = {"stoch": jnp.swapaxes(stoch_in, 0, 1), "action": jnp.swapaxes(actions, 0, 1)}
  _, deters = jax.lax.scan(step, init["deter"], xs)
  prior_logit = apply(Connector.prior_logit, jnp.swapaxes(deters, 0, 1))
  kl = config.kl
  loss_kl, kl_value = kl_loss(post["logit"], prior_logit, kl.forward, kl.balance, kl.free,
                              kl.free_avg)
  metrics = {"aligner_cosine_distance": align_loss, "connector_kl": jnp.mean(kl_value)}

  if length > n:  # Metric only: how well the learned initial state matches chunk starts.
    starts = jnp.arange(n, length, n)
    a = actions[:, starts]
    init_kl = apply(Connector.initial, a, k_initkl, recorded.get("initkl_stoch"))
    prior = apply(Connector.img_step, init_kl, a)
    value = dists.categorical_kl(prior["logit"], post["logit"][:, starts])
    metrics["connector_initial_kl"] = jax.lax.stop_gradient(jnp.mean(value))
  loss = align_loss + config.loss_scale * loss_kl
  metrics["connector_model_loss"] = loss
  return loss, metrics


def imagine(connector: Connector, params: Params, embed: jax.Array, key: jax.Array | None, *,
            sample: bool = True, denoise: bool = False, aligner: Aligner | None = None,
            init_stoch: jax.Array | None = None, reset_every_n_frames: bool = False,
            recorded_init_stoch: jax.Array | None = None) -> State:
  """Roll the connector out over embeddings `(B, T, E)` (method.md §3.5 `video_imagine`).

  params `{'connector', 'aligner'}`. `denoise` first maps the embeddings through the
  aligner. The initial stoch is sampled from the learned initial state (or replaced by
  `init_stoch (B, S, K)`, e.g. a world-model posterior); later steps sample if `sample`,
  else take the mode. `reset_every_n_frames` restarts every chunk from a zero deter with the
  last stoch. Returns the prior states after each step, `(B, T, ...)`.
  """
  if denoise:
    if aligner is None:
      raise ValueError("imagine(denoise=True) needs the aligner module")
    embed = align(aligner, params["aligner"], embed)
  apply = lambda method, *a: connector.apply({"params": params["connector"]}, *a, method=method)
  actions = embedding_actions(connector, embed)
  k_init, k_steps = (None, None) if key is None else jax.random.split(key)
  init = apply(Connector.initial, actions[:, 0], k_init, recorded_init_stoch)
  if init_stoch is not None:
    init = dict(init, stoch=init_stoch.astype(jnp.float32))
  step_key = k_steps if sample else None
  rssm_def, rssm_params = connector.rssm_def(), params["connector"]["rssm"]
  if not reset_every_n_frames:
    return rssm.imagine_with_actions(rssm_def, rssm_params, actions, init, step_key)
  n = connector.n_frames
  chunks = []
  for c, start in enumerate(range(0, actions.shape[1], n)):
    chunk_key = None if step_key is None else jax.random.fold_in(step_key, c)
    states = rssm.imagine_with_actions(rssm_def, rssm_params, actions[:, start:start + n], init,
                                       chunk_key)
    chunks.append(states)
    last_stoch = states["stoch"][:, -1]
    init = jax.tree.map(jnp.zeros_like, init) | {"stoch": last_stoch}
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, 1), *chunks)
