"""Start states of imagination: from a dataset batch (offline) or from nothing (data-free).

Offline (method.md §4.2): every posterior state of a batch `(B, T)` is a start, `B * T` in all.
Data-free (method.md §5): uniform random latents, part of them replaced by connector rollouts
driven by random unit embeddings, then warmed up for a few prior steps, half with uniform
random actions and half with the current policy. States are dicts `{deter, stoch, logit}`
with a leading start axis `N`; gradients are stopped.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from genrl_jax import aligner as aligner_lib
from genrl_jax import connector as connector_lib
from genrl_jax import mfwm as mfwm_lib
from genrl_jax import rssm
from genrl_jax import world_model as wm_lib
from genrl_jax.behavior.actor_critic import Actor
from genrl_jax.behavior.imagine import imagine

Params = Any
VIDEO_STARTS = ("mix", "video", "uniform")


def offline_starts(model: wm_lib.WorldModel, params: Params, batch: dict[str, jax.Array],
                   key: jax.Array | None) -> rssm.State:
  """Sampled posterior of `batch` (`observation (B, T, 64, 64, 3)`, `action (B, T, A)`,
  `is_first (B, T)`) filtered from the zero state, flattened to `(B * T, ...)`, row
  `b * T + t`."""
  batch = wm_lib.float_batch(batch)
  embed = model.apply({"params": params}, batch["observation"], method=wm_lib.WorldModel.encode)
  post, _ = rssm.observe(model.rssm_def(), params["rssm"], embed, batch["action"],
                         batch["is_first"], key)
  return flatten_starts(post)


def flatten_starts(post: rssm.State) -> rssm.State:
  """A batch-major posterior `(B, T, ...)` -> detached start states `(B * T, ...)`, row
  `b * T + t`: every posterior state starts an imagined rollout (method.md §4.2)."""
  return jax.tree.map(lambda x: jax.lax.stop_gradient(x.reshape((-1,) + x.shape[2:])), post)


def uniform_latents(model: wm_lib.WorldModel, num: int, key: jax.Array) -> rssm.State:
  """Zero deter, a uniformly drawn one-hot stoch and uniform logits, `(num, ...)`."""
  s, k = model.stoch, model.discrete
  stoch = jax.nn.one_hot(jax.random.randint(key, (num, s), 0, k), k, dtype=jnp.float32)
  # The reference stores the uniform *probabilities* as logits; any constant is uniform.
  return {"deter": jnp.zeros((num, model.deter), jnp.float32), "stoch": stoch,
          "logit": jnp.full((num, s, k), 1.0 / k, jnp.float32)}


def video_latents(mfwm: mfwm_lib.MFWM, params: Params, num: int, key: jax.Array) -> jax.Array:
  """Stochs `(num, S, K)` of connector rollouts of `2 * n_frames` steps driven by a fresh
  random unit embedding at every step (sampled, denoised by the aligner)."""
  length = 2 * mfwm.connector.n_frames
  if num % length:
    raise ValueError(f"data-free starts: {num} seeds are not a multiple of the connector "
                     f"rollout length {length} (2 * connector.n_frames); change "
                     "behavior.batch_size or behavior.batch_length")
  k_embed, k_roll = jax.random.split(key)
  embed = aligner_lib.normalize(
      jax.random.normal(k_embed, (num // length, length, mfwm.connector.embed_dim)))
  states = connector_lib.imagine(mfwm.connector, params, embed, k_roll, sample=True,
                                 denoise=True, aligner=mfwm.aligner)
  return states["stoch"].reshape((num,) + states["stoch"].shape[2:])


def data_free_starts(mfwm: mfwm_lib.MFWM, params: Params, actor: Actor, actor_params: Params,
                     num: int, group: int, key: jax.Array,
                     config: ml_collections.ConfigDict) -> rssm.State:
  """`num` start states without data (method.md §5). `params` are the MFWM's.

  config (`behavior.data_free`): `start_from_video` `'mix'` (each seed keeps its uniform
  stoch or takes a connector stoch with probability 1/2), `'video'` (always the
  connector's) or `'uniform'`; `mix_random_actions` (half the starts warm up with uniform
  random actions, half with the policy, from the same `num / 2` seeds); `warmup_steps`.
  With the mixture, rows are laid out as the reference's `(num / group, group)` grid whose
  first `group / 2` columns are the random-action half.
  """
  model = mfwm.world_model
  mix = config.mix_random_actions
  if mix and (num % group or group % 2):
    raise ValueError(f"data-free starts: {num} starts must form rows of an even length "
                     f"(behavior.batch_length={group})")
  seeds = num // 2 if mix else num
  k_uni, k_vid, k_pick, k_rand_a, k_rand_s, k_pol = jax.random.split(key, 6)
  init = uniform_latents(model, seeds, k_uni)
  if config.start_from_video not in VIDEO_STARTS:
    raise ValueError(f"behavior.data_free.start_from_video={config.start_from_video!r}: "
                     f"expected one of {VIDEO_STARTS}")
  if config.start_from_video != "uniform":
    if not mfwm.has_connector:
      raise ValueError("data-free starts from video need an MFWM with a connector; set "
                       "behavior.data_free.start_from_video='uniform'")
    video = video_latents(mfwm, params, seeds, k_vid)
    if config.start_from_video == "mix":
      keep = jax.random.bernoulli(k_pick, 0.5, (seeds, 1, 1))
      video = jnp.where(keep, init["stoch"], video)
    init = dict(init, stoch=video)

  rssm_def, rssm_params = model.rssm_def(), params["world_model"]["rssm"]
  steps = config.warmup_steps
  if steps < 1:
    raise ValueError(f"behavior.data_free.warmup_steps={steps}: expected >= 1")
  policy = imagine(rssm_def, rssm_params, actor, actor_params, init, steps, k_pol)
  policy = {k: policy[k][-1] for k in ("deter", "stoch", "logit")}
  if mix:
    actions = jax.random.uniform(k_rand_a, (seeds, steps, model.action_dim), minval=-1.0,
                                 maxval=1.0)
    rand = rssm.imagine_with_actions(rssm_def, rssm_params, actions, init, k_rand_s)
    rand = jax.tree.map(lambda x: x[:, -1], rand)
    half = group // 2
    grid = lambda x: x.reshape((num // group, half) + x.shape[1:])
    starts = jax.tree.map(
        lambda r, p: jnp.concatenate([grid(r), grid(p)], 1).reshape((num,) + r.shape[1:]),
        rand, policy)
  else:
    starts = policy
  return jax.tree.map(jax.lax.stop_gradient, starts)
