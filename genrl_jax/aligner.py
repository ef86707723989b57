"""The aligner (method.md §3.6): maps VLM embeddings onto the video-embedding manifold.

A small residual U-Net (E -> E/2 bottleneck, 2 levels), trained to map LaFiTe-corrupted
video embeddings back to the clean ones (`aligner_loss`); at prompt time it maps text
embeddings towards video embeddings (`align`). Embeddings are `(..., E)`, unit norm.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrl_jax.nets import VECTOR_LN_EPS

Params = Any
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize
COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity


def normalize(x: jax.Array) -> jax.Array:
  """`x / max(|x|, 1e-12)` over the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORMALIZE_EPS)


def cosine_similarity(x: jax.Array, y: jax.Array) -> jax.Array:
  """`(..., E), (..., E) -> (...)`, each norm clamped at 1e-8 as torch does."""
  nx = jnp.maximum(jnp.linalg.norm(x, axis=-1), COSINE_EPS)
  ny = jnp.maximum(jnp.linalg.norm(y, axis=-1), COSINE_EPS)
  return jnp.sum(x * y, axis=-1) / (nx * ny)


class ResidualLinear(nn.Module):
  """`h = SiLU(LN(Linear(x)))` (or just `Linear(x)` without `norm_act`), plus `x` or a
  linear projection of `x` when the widths differ (method.md §3.6)."""
  features: int
  norm_act: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Dense(self.features, dtype=self.dtype, name="layer")(x)
    if self.norm_act:
      h = nn.silu(nn.LayerNorm(epsilon=VECTOR_LN_EPS, dtype=self.dtype, name="norm")(h))
    if x.shape[-1] == self.features:
      return h + x
    return h + nn.Dense(self.features, dtype=self.dtype, name="res_proj")(x)


class Aligner(nn.Module):
  """UNet denoiser `(..., E) -> (..., E)`; the output is not normalised (callers do)."""
  embed_dim: int = 512
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mid = self.embed_dim // 2
    block = lambda f, name, norm_act=True: ResidualLinear(f, norm_act, self.dtype, name=name)
    x = x.astype(self.dtype)
    d0 = block(self.embed_dim, "down0")(x)
    d1 = block(mid, "down1")(d0)
    m = block(mid, "mid1")(block(mid, "mid0")(d1))
    u0 = block(self.embed_dim, "up0", norm_act=False)(jnp.concatenate([m, d1], -1))
    return block(self.embed_dim, "up1")(jnp.concatenate([u0, d0], -1)).astype(jnp.float32)


def lafite_noise(embed: jax.Array, eps: jax.Array, strength: float) -> jax.Array:
  """LaFiTe corruption `normalize((1 - a) v + a normalize(eps))`, eps ~ N(0, I)."""
  return normalize((1.0 - strength) * embed + strength * normalize(eps))


def align(aligner: Aligner, params: Params, embed: jax.Array) -> jax.Array:
  """`(..., E) -> (..., E)`: the aligner's output, normalised. `params` are the aligner's."""
  return normalize(aligner.apply({"params": params}, embed))


def aligner_loss(aligner: Aligner, params: Params, clean: jax.Array, eps: jax.Array,
                 strength: float) -> jax.Array:
  """Mean cosine distance between the denoised LaFiTe corruption of `clean (..., E)` (noise
  `eps`, same shape, and `strength`) and `clean` itself (method.md §3.4). `params` are the
  aligner's."""
  denoised = align(aligner, params, lafite_noise(clean, eps, strength))
  return 1.0 - jnp.mean(cosine_similarity(denoised, clean))
