"""Stride-2 convolutions and transposed convolutions written as stride-1 convolutions.

Both compute exactly what `flax.linen.Conv(strides=2, padding='VALID')` and
`ConvTranspose(strides=2, padding='VALID', transpose_kernel=True)` compute, with the same
parameter names and layouts, so parameters and checkpoints are interchangeable. Why: the
gradients of strided convolutions are dilated convolutions, which XLA's CPU backend runs
on a slow generic path (a small-size decoder update took 9 s, 10x the PyTorch reference);
stride-1 convolutions take the fast path there and are just as good on accelerators.

* Conv, stride 2: space-to-depth by 2, then a stride-1 conv with a kernel of half the size
  (the kernel is rearranged the same way).
* Transposed conv, stride 2: output pixel `2m + p` only receives kernel taps `t = p + 2r`,
  so each of the 4 output phases `(p, q)` is a stride-1 "full" conv of the input with a
  flipped sub-kernel; the phases are then interleaved (depth-to-space).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "native", "stride1", "taps")


def resolve_impl(impl: str, in_features: int, out_features: int) -> str:
  """`auto`: XLA's strided convs on accelerators; on CPU the stride-1 forms, as per-tap
  matmuls for layers wide enough for matmuls to pay off (measured on 2 cores: 2x faster
  at 64 channels, 2x slower at 3)."""
  if impl not in IMPLS:
    raise ValueError(f"conv_impl={impl!r}: expected one of {IMPLS}")
  if impl != "auto":
    return impl
  if jax.default_backend() != "cpu":
    return "native"
  return "taps" if min(in_features, out_features) >= 16 else "stride1"


def conv_stride1(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], ...],
                 taps: bool) -> jax.Array:
  """Stride-1 conv (cross-correlation), x `(N, H, W, I)`, kernel `(kh, kw, I, O)`.

  `taps=True` writes it as one matmul per kernel tap, whose gradients are matmuls too.
  """
  if not taps:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)
  x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
  kh, kw = kernel.shape[:2]
  out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  out = None
  for a in range(kh):
    for b in range(kw):
      term = jnp.einsum("nhwi,io->nhwo", x[:, a:a + out_h, b:b + out_w], kernel[a, b])
      out = term if out is None else out + term
  return out


def _space_to_depth(x: jax.Array) -> jax.Array:
  """`(N, 2H, 2W, C) -> (N, H, W, 4C)` with channel order `(row phase, col phase, c)`."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h // 2, w // 2, 4 * c)


def conv_stride2(x: jax.Array, kernel: jax.Array, impl: str = "stride1") -> jax.Array:
  """VALID conv with stride 2. x `(N, H, W, I)`, kernel `(k, k, I, O)` (HWIO)."""
  if impl == "native":
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), "VALID", dimension_numbers=_DIMS)
  k = kernel.shape[0]
  out_h, out_w = (x.shape[1] - k) // 2 + 1, (x.shape[2] - k) // 2 + 1
  if k % 2:  # A zero tap at the end makes the kernel even without changing the result.
    kernel = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    k += 1
  pad_h, pad_w = (-x.shape[1]) % 2, (-x.shape[2]) % 2
  x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  i, o = kernel.shape[2:]
  kh = k // 2
  kernel = kernel.reshape(kh, 2, kh, 2, i, o).transpose(0, 2, 1, 3, 4, 5).reshape(kh, kh, 4 * i, o)
  y = conv_stride1(_space_to_depth(x), kernel, ((0, 0), (0, 0)), taps=impl == "taps")
  return y[:, :out_h, :out_w]


def conv_transpose_stride2(x: jax.Array, kernel: jax.Array, impl: str = "stride1"
                           ) -> jax.Array:
  """VALID transposed conv with stride 2 (torch `ConvTranspose2d` semantics).

  x `(N, H, W, I)`, kernel `(k, k, O, I)` (Flax `transpose_kernel=True` layout). Output
  `(N, 2(H-1)+k, 2(W-1)+k, O)`.
  """
  if impl == "native":
    return jax.lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=_DIMS,
                                  transpose_kernel=True)
  k = kernel.shape[0]
  n, h, w, _ = x.shape
  taps = (len(range(0, k, 2)), len(range(1, k, 2)))  # taps of output phase 0 and 1
  size_h, size_w = h + taps[0] - 1, w + taps[0] - 1
  rows = []
  for p in (0, 1):
    cols = []
    for q in (0, 1):
      sub = kernel[p::2, q::2][::-1, ::-1].transpose(0, 1, 3, 2)  # (r, r', I, O), flipped
      rp, rq = taps[p], taps[q]
      y = conv_stride1(x, sub, ((rp - 1, rp - 1), (rq - 1, rq - 1)), taps=impl == "taps")
      cols.append(jnp.pad(y, ((0, 0), (0, size_h - y.shape[1]), (0, size_w - y.shape[2]),
                              (0, 0))))
    rows.append(jnp.stack(cols, axis=3))  # (N, h', w', q, O)
  y = jnp.stack(rows, axis=2)  # (N, h', p, w', q, O)
  y = y.reshape(n, 2 * size_h, 2 * size_w, -1)
  return y[:, :2 * (h - 1) + k, :2 * (w - 1) + k]


class StridedConv(nn.Module):
  """Drop-in for `nn.Conv(features, (k, k), strides=2, padding='VALID')`, or with
  `transpose` for `nn.ConvTranspose(..., transpose_kernel=True)`, with the same params."""
  features: int
  kernel_size: int
  transpose: bool = False
  impl: str = "auto"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k, cin = self.kernel_size, x.shape[-1]
    shape = (k, k, self.features, cin) if self.transpose else (k, k, cin, self.features)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    impl = resolve_impl(self.impl, cin, self.features)
    conv = conv_transpose_stride2 if self.transpose else conv_stride2
    return conv(x.astype(self.dtype), kernel.astype(self.dtype), impl) + bias.astype(self.dtype)
