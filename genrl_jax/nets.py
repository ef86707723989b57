"""Linen building blocks shared by the world model, connector and actor-critic.

Parameters are float32 (`param_dtype`); `dtype` is the compute dtype (float32 on CPU,
bfloat16 on accelerators). LayerNorm epsilons follow the reference: 1e-5 for vector norms,
1e-3 for the per-pixel channel norms of the CNNs (method.md §1.1).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genrl_jax.convs import StridedConv

VECTOR_LN_EPS = 1e-5
IMAGE_LN_EPS = 1e-3


class DenseNormAct(nn.Module):
  """Linear (with bias, method.md §1.7) -> LayerNorm -> SiLU."""
  units: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.units, dtype=self.dtype, name="dense")(x)
    x = nn.LayerNorm(epsilon=VECTOR_LN_EPS, dtype=self.dtype, name="norm")(x)
    return nn.silu(x)


class MLP(nn.Module):
  """`layers` x [Linear -> LN -> SiLU], then a linear output of width `out` (method.md §1.7).

  `out=None` returns the last hidden layer. Input `(..., D)` -> `(..., out)`.
  """
  units: int
  layers: int
  out: int | None = None
  zero_init_out: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    for i in range(self.layers):
      x = DenseNormAct(self.units, dtype=self.dtype, name=f"layer{i}")(x)
    if self.out is None:
      return x
    init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
    return nn.Dense(self.out, dtype=self.dtype, kernel_init=init, bias_init=nn.initializers.zeros,
                    name="out")(x)


class LayerNormGRU(nn.Module):
  """DreamerV2 LayerNorm GRU (method.md §1.8): one bias-free Linear over `[x, h]`, LN, then
  reset / candidate / update gates with update bias -1. `(x (..., I), h (..., H)) -> h'`."""
  units: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, h: jax.Array) -> jax.Array:
    parts = nn.Dense(3 * self.units, use_bias=False, dtype=self.dtype, name="dense")(
        jnp.concatenate([x.astype(self.dtype), h.astype(self.dtype)], -1))
    parts = nn.LayerNorm(epsilon=VECTOR_LN_EPS, dtype=self.dtype, name="norm")(parts)
    reset, cand, update = jnp.split(parts, 3, axis=-1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1.0)
    h_new = update * cand + (1.0 - update) * h.astype(self.dtype)
    # The recurrent state stays float32 so that long rollouts do not drift in bf16.
    return h_new.astype(jnp.float32)


class ConvEncoder(nn.Module):
  """Four [Conv(k, stride 2, VALID) -> channel LN (eps 1e-3) -> SiLU] blocks (method.md §2.2).

  `conv_impl` chooses how the strided convs are computed (see `genrl_jax.convs`).

  Input `(..., 64, 64, 3)` float in [-0.5, 0.5]; output `(..., 32 * depth)` flattened in the
  reference's (C, H, W) order so that reference weights load without permutation.
  """
  depth: int = 48
  kernels: Sequence[int] = (4, 4, 4, 4)
  conv_impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    batch_shape = image.shape[:-3]
    x = image.reshape((-1,) + image.shape[-3:]).astype(self.dtype)
    for i, k in enumerate(self.kernels):
      x = StridedConv(self.depth * 2 ** i, k, impl=self.conv_impl, dtype=self.dtype,
                      name=f"conv{i}")(x)
      x = nn.LayerNorm(epsilon=IMAGE_LN_EPS, dtype=self.dtype, name=f"norm{i}")(x)
      x = nn.silu(x)
    x = jnp.transpose(x, (0, 3, 1, 2))  # NHWC -> NCHW before flattening (reference order)
    return x.reshape(batch_shape + (-1,))


class ConvDecoder(nn.Module):
  """Linear -> (1, 1, 32 * depth) -> four transposed convs (method.md §2.5).

  `conv_impl` chooses how the transposed convs are computed (see `genrl_jax.convs`).
  Input `(..., D)` (the flattened stoch); output mean image `(..., 64, 64, channels)` in the
  preprocessed space [-0.5, 0.5]. The first Linear (`conv_in`) is also the projection used
  by the GenRL reward.
  """
  depth: int = 48
  kernels: Sequence[int] = (5, 5, 6, 6)
  channels: int = 3
  conv_impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.conv_in = nn.Dense(32 * self.depth, dtype=self.dtype, name="conv_in")
    n = len(self.kernels)
    self.deconvs = [
        StridedConv(self.channels if i == n - 1 else self.depth * 2 ** (n - 2 - i), k,
                    transpose=True, impl=self.conv_impl, dtype=self.dtype, name=f"deconv{i}")
        for i, k in enumerate(self.kernels)]
    self.norms = [nn.LayerNorm(epsilon=IMAGE_LN_EPS, dtype=self.dtype, name=f"norm{i}")
                  for i in range(n - 1)]

  def project(self, x: jax.Array) -> jax.Array:
    """The decoder's first Linear: `(..., D) -> (..., 32 * depth)`."""
    return self.conv_in(x.astype(self.dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    batch_shape = x.shape[:-1]
    h = self.project(x).reshape((-1, 1, 1, 32 * self.depth))
    for i, deconv in enumerate(self.deconvs):
      h = deconv(h)
      if i < len(self.norms):
        h = nn.silu(self.norms[i](h))
    return h.reshape(batch_shape + h.shape[1:]).astype(jnp.float32)
