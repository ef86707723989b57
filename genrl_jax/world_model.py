"""The DreamerV3-style world model of GenRL (method.md §2) and its loss.

Batches are batch-major: `observation (B, T, 64, 64, 3) uint8`, `action (B, T, A)` (the
action that led to each frame), `reward (B, T)`, `is_first (B, T)`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from genrl_jax import dists, rssm
from genrl_jax.nets import MLP, ConvDecoder, ConvEncoder

Params = Any
BATCH_KEYS = ("observation", "action", "reward", "is_first")
# What `float_batch` casts to float32.
FLOAT_KEYS = ("action", "reward", "is_first")


def preprocess_image(image: jax.Array) -> jax.Array:
  """uint8 `[0, 255]` -> float32 `[-0.5, 0.5]` (method.md §2.1)."""
  return image.astype(jnp.float32) / 255.0 - 0.5


class WorldModel(nn.Module):
  """Encoder, RSSM, decoder (from the stoch only) and twohot reward head.

  Params tree: `{'encoder', 'rssm', 'decoder', 'reward_head'}`.
  """
  action_dim: int
  deter: int = 1024
  hidden: int = 1024
  stoch: int = 32
  discrete: int = 32
  cnn_depth: int = 48
  encoder_kernels: Sequence[int] = (4, 4, 4, 4)
  decoder_kernels: Sequence[int] = (5, 5, 6, 6)
  mlp_units: int = 1024
  mlp_layers: int = 4
  single_obs_posterior: bool = True
  conv_impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def _rssm_fields(self) -> dict[str, Any]:
    return dict(deter=self.deter, hidden=self.hidden, stoch=self.stoch, discrete=self.discrete,
                single_obs_posterior=self.single_obs_posterior, dtype=self.dtype)

  def rssm_def(self) -> rssm.RSSM:
    """A standalone RSSM description whose params are `params['rssm']`."""
    return rssm.RSSM(**self._rssm_fields(), parent=None)

  def setup(self):
    self.encoder = ConvEncoder(self.cnn_depth, tuple(self.encoder_kernels), self.conv_impl,
                               dtype=self.dtype)
    self.rssm = rssm.RSSM(**self._rssm_fields())
    self.decoder = ConvDecoder(self.cnn_depth, tuple(self.decoder_kernels), 3, self.conv_impl,
                               dtype=self.dtype)
    self.reward_head = MLP(self.mlp_units, self.mlp_layers, out=dists.NUM_BUCKETS,
                           zero_init_out=True, dtype=self.dtype)

  def __call__(self, observation: jax.Array, action: jax.Array) -> jax.Array:
    """Touches every layer once (for `init`); shapes `(N, 64, 64, 3)`, `(N, A)`."""
    embed = self.encode(observation)
    state = rssm.initial_state(self.rssm, observation.shape[:1])
    prior_logit, post_logit = self.rssm(state["stoch"], state["deter"], action, embed)
    stoch = dists.onehot_mode(post_logit)
    feat = jnp.concatenate([stoch.reshape(stoch.shape[:-2] + (-1,)), state["deter"]], -1)
    return self.decode(stoch.reshape(stoch.shape[:-2] + (-1,))), self.reward_logits(feat)

  def encode(self, observation: jax.Array) -> jax.Array:
    """uint8 `(..., 64, 64, 3)` -> embedding `(..., 32 * cnn_depth)`."""
    return self.encoder(preprocess_image(observation)).astype(jnp.float32)

  def decode(self, stoch_flat: jax.Array) -> jax.Array:
    """Flattened stoch `(..., S*K)` -> mean image `(..., 64, 64, 3)` in [-0.5, 0.5]."""
    return self.decoder(stoch_flat)

  def project(self, stoch_flat: jax.Array) -> jax.Array:
    """The decoder's first Linear, `(..., S*K) -> (..., 32 * cnn_depth)` (GenRL reward)."""
    return self.decoder.project(stoch_flat).astype(jnp.float32)

  def reward_logits(self, feat: jax.Array) -> jax.Array:
    """Feature `(..., S*K + H)` -> twohot logits `(..., 255)` in float32."""
    return self.reward_head(feat).astype(jnp.float32)


def make_world_model(config: ml_collections.ConfigDict, action_dim: int) -> WorldModel:
  """Builds the module from `config.world_model` (sizes) and `config.compute_dtype`."""
  wm = config.world_model
  return WorldModel(
      action_dim=action_dim, deter=wm.deter, hidden=wm.hidden, stoch=wm.stoch,
      discrete=wm.discrete, cnn_depth=wm.cnn_depth, encoder_kernels=tuple(wm.encoder_kernels),
      decoder_kernels=tuple(wm.decoder_kernels), mlp_units=wm.mlp_units,
      mlp_layers=wm.mlp_layers, single_obs_posterior=wm.single_obs_posterior,
      conv_impl=wm.conv_impl, dtype=compute_dtype(config.compute_dtype))


def compute_dtype(name: str) -> jnp.dtype:
  """`'float32' | 'bfloat16' | 'auto'` (bfloat16 on accelerators, float32 on CPU)."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.compute_dtype={name!r}: expected 'float32', 'bfloat16' or 'auto'")
  return jnp.dtype(name)


# Jitted: run eagerly, flax's init compiles every op of the forward pass on its own
# (~370 small XLA programs, 22 s for `tiny` on 2 CPU cores against 12 s as one program);
# the params are bit-identical either way.
@functools.partial(jax.jit, static_argnums=0)
def init_world_model(model: WorldModel, key: jax.Array) -> Params:
  """Fresh params of `model` from `key` (inputs: one 64x64 RGB frame and one action)."""
  obs = jnp.zeros((1, 64, 64, 3), jnp.uint8)
  return model.init(key, obs, jnp.zeros((1, model.action_dim)))["params"]


def action_dim_of(params: Params, config: ml_collections.ConfigDict) -> int:
  """The action size of a world model's params (sizes from `config.world_model`): its
  prior's first layer reads `[stoch (S*K), action (A)]`, so A = rows - S*K. Checkpoints,
  imported ones included, store params only."""
  wm = config.world_model
  rows = params["rssm"]["img_in"]["dense"]["kernel"].shape[0]
  return rows - wm.stoch * wm.discrete


def kl_loss(post_logit: jax.Array, prior_logit: jax.Array, forward: bool, balance: float,
            free: float, free_avg: bool = False) -> tuple[jax.Array, jax.Array]:
  """KL balancing with free bits (method.md §2.4). Logits `(..., S, K)`.

  forward=False: lhs = post, rhs = prior, mix = 1 - balance (world model);
  forward=True: lhs = prior, rhs = post, mix = balance (connector).
  Free bits are applied per element before the mean unless `free_avg`.
  Returns `(loss scalar, value (...))` with `value = KL(lhs || sg(rhs))`.
  """
  lhs, rhs = (prior_logit, post_logit) if forward else (post_logit, prior_logit)
  mix = balance if forward else 1.0 - balance
  sg = jax.lax.stop_gradient

  def free_mean(kl):
    return jnp.maximum(jnp.mean(kl), free) if free_avg else jnp.mean(jnp.maximum(kl, free))

  value = dists.categorical_kl(lhs, sg(rhs))
  if balance == 0.5:
    return free_mean(dists.categorical_kl(lhs, rhs)), value
  loss_lhs = free_mean(value)
  loss_rhs = free_mean(dists.categorical_kl(sg(lhs), rhs))
  return mix * loss_lhs + (1.0 - mix) * loss_rhs, value


def check_batch(batch: dict[str, Any], action_dim: int, image_size: int = 64) -> None:
  """Raises a ValueError naming the key when a batch does not have the expected layout."""
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise ValueError(f"batch is missing keys {missing}; expected keys {list(BATCH_KEYS)}")
  obs = batch["observation"]
  expected = f"(B, T, {image_size}, {image_size}, 3) uint8"
  if obs.ndim != 5 or tuple(obs.shape[2:]) != (image_size, image_size, 3):
    raise ValueError(f"batch['observation'] has shape {tuple(obs.shape)}; expected {expected}")
  if obs.dtype != jnp.uint8:
    raise ValueError(f"batch['observation'] has dtype {obs.dtype}; expected {expected}")
  bt = tuple(obs.shape[:2])
  shapes = {"action": bt + (action_dim,), "reward": bt, "is_first": bt}
  for key, shape in shapes.items():
    if tuple(batch[key].shape) != shape:
      raise ValueError(f"batch[{key!r}] has shape {tuple(batch[key].shape)}; expected {shape}")


def float_batch(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The batch with its `action (B, T, A)`, `reward (B, T)` and `is_first (B, T)` (those it
  has) as float32, as the losses and the filter read them; images stay uint8."""
  return dict(batch, **{k: batch[k].astype(jnp.float32) for k in FLOAT_KEYS if k in batch})


def world_model_loss(model: WorldModel, params: Params, batch: dict[str, jax.Array],
                     key: jax.Array | None, config: ml_collections.ConfigDict,
                     recorded_post_stoch: jax.Array | None = None, reward_grad: bool = False
                     ) -> tuple[jax.Array, tuple[dict[str, jax.Array], rssm.State]]:
  """World-model loss (method.md §2.7): `kl * L_kl + observation * L_obs + reward * L_reward`.

  `config` is `config.world_model` (kl settings and loss scales). `key=None` filters with
  the posterior mode; `recorded_post_stoch (B, T, S, K)` replays given posterior samples.
  `reward_grad`: the reward loss also trains the encoder and RSSM (the reward head is a
  "grad head", as in the reference's DreamerV3 collection agent, method.md §8); GenRL's world
  model (the default) trains the reward head on the detached feature (method.md §2.6).
  Returns `(loss, (metrics, post))` with the batch-major posterior `(B, T, ...)`.
  """
  apply = lambda method, *args: model.apply({"params": params}, *args, method=method)
  embed = apply(WorldModel.encode, batch["observation"])
  post, prior = rssm.observe(model.rssm_def(), params["rssm"], embed, batch["action"],
                             batch["is_first"], key, recorded_post_stoch)
  kl = config.kl
  loss_kl, kl_value = kl_loss(post["logit"], prior["logit"], kl.forward, kl.balance, kl.free,
                              kl.free_avg)
  image = apply(WorldModel.decode, rssm.flat_stoch(post))
  obs_nll = -jnp.mean(dists.mse_log_prob(image, preprocess_image(batch["observation"])))
  feat = rssm.feature(post)
  reward_logits = apply(WorldModel.reward_logits,
                        feat if reward_grad else jax.lax.stop_gradient(feat))
  reward_nll = -jnp.mean(dists.twohot_log_prob(reward_logits, batch["reward"]))
  scales = config.loss_scales
  loss = scales.kl * loss_kl + scales.observation * obs_nll + scales.reward * reward_nll
  metrics = {
      "kl_loss": loss_kl, "observation_loss": obs_nll, "reward_loss": reward_nll,
      "model_loss": loss, "model_kl": jnp.mean(kl_value),
      "prior_ent": jnp.mean(dists.categorical_entropy(prior["logit"])),
      "post_ent": jnp.mean(dists.categorical_entropy(post["logit"])),
  }
  return loss, (metrics, post)
