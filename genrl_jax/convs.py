"""Stride-2 convolutions and transposed convolutions as one GEMM each (for CPUs).

Each computes exactly what `flax.linen.Conv(strides=2, padding='VALID')` or
`ConvTranspose(strides=2, padding='VALID', transpose_kernel=True)` computes, with the same
parameter names and layouts, so parameters and checkpoints are interchangeable. Why: XLA's
CPU backend runs the gradients of strided convolutions (dilated convolutions) on a slow
generic path (several times slower than the forward pass: `docs/benchmarks.md`), while its
matrix multiplies reach most of the cores' peak. Written as one matrix multiply over
gathered patches (im2col), the forward pass and both gradients are GEMMs with a long
contraction (`K = taps * channels`), and the patch gathering transposes to sums of pads.

* Conv, stride 2: space-to-depth by 2, then a stride-1 conv with a kernel of half the size
  (the kernel is rearranged the same way), as one GEMM over `(k/2)^2` gathered taps.
* Transposed conv, stride 2: output pixel `2m + p` only receives kernel taps `t = p + 2r`,
  so all four output phases `(p, q)` are one stride-1 conv of the padded input with the
  `ceil(k/2)^2` taps, whose GEMM outputs the 4 phases side by side (`N = 4 * O`); they are
  then interleaved (depth-to-space). A 1x1 input (the decoder's first layer) is a plain
  matrix multiply.

`impl`: `native` (XLA's convolutions: the choice on GPU/TPU), `im2col` (the above: the
choice on CPU), `taps` (the same stride-1 forms with one GEMM per tap, K = channels) and
`stride1` (the stride-1 forms through XLA's convolution); `auto` picks per backend.
Measured with `python benchmarks/world_model_step.py` (`docs/benchmarks.md`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")
IMPLS = ("auto", "native", "im2col", "taps", "stride1")


def resolve_impl(impl: str) -> str:
  """`auto`: XLA's strided convs on accelerators, the im2col GEMMs on CPU."""
  if impl not in IMPLS:
    raise ValueError(f"conv_impl={impl!r}: expected one of {IMPLS}")
  if impl != "auto":
    return impl
  return "im2col" if jax.default_backend() == "cpu" else "native"


def _patches(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """`(N, H, W, C) -> (N, H-kh+1, W-kw+1, kh*kw*C)`, channel order `(a, b, c)`."""
  out_h, out_w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  return jnp.concatenate([x[:, a:a + out_h, b:b + out_w] for a in range(kh) for b in range(kw)],
                         axis=-1)


def conv_stride1(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], ...],
                 impl: str) -> jax.Array:
  """Stride-1 conv (cross-correlation), x `(N, H, W, I)`, kernel `(kh, kw, I, O)`."""
  if impl in ("native", "stride1"):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)
  x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
  kh, kw, cin, cout = kernel.shape
  if impl == "im2col":
    return jnp.einsum("nhwk,ko->nhwo", _patches(x, kh, kw), kernel.reshape(kh * kw * cin, cout))
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


def conv_stride2(x: jax.Array, kernel: jax.Array, impl: str = "im2col") -> jax.Array:
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
  y = conv_stride1(_space_to_depth(x), kernel, ((0, 0), (0, 0)), impl)
  return y[:, :out_h, :out_w]


def conv_transpose_stride2(x: jax.Array, kernel: jax.Array, impl: str = "im2col"
                           ) -> jax.Array:
  """VALID transposed conv with stride 2 (torch `ConvTranspose2d` semantics).

  x `(N, H, W, I)`, kernel `(k, k, O, I)` (Flax `transpose_kernel=True` layout). Output
  `(N, 2(H-1)+k, 2(W-1)+k, O)`.
  """
  if impl == "native":
    return jax.lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=_DIMS,
                                  transpose_kernel=True)
  if impl == "im2col":
    return _conv_transpose_phases_gemm(x, kernel)
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
      y = conv_stride1(x, sub, ((rp - 1, rp - 1), (rq - 1, rq - 1)), impl)
      cols.append(jnp.pad(y, ((0, 0), (0, size_h - y.shape[1]), (0, size_w - y.shape[2]),
                              (0, 0))))
    rows.append(jnp.stack(cols, axis=3))  # (N, h', w', q, O)
  y = jnp.stack(rows, axis=2)  # (N, h', p, w', q, O)
  y = y.reshape(n, 2 * size_h, 2 * size_w, -1)
  return y[:, :2 * (h - 1) + k, :2 * (w - 1) + k]


def _conv_transpose_phases_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The transposed conv as one GEMM whose columns are the 4 output phases (see above)."""
  k, _, o, i = kernel.shape
  n, h, w, _ = x.shape
  if h == 1 and w == 1:  # every output pixel sees the one input pixel through one tap
    return jnp.einsum("ni,aboi->nabo", x[:, 0, 0], kernel)
  r = (k + 1) // 2  # taps per phase; an odd kernel gets a zero tap at index k
  kernel = jnp.pad(kernel, ((0, 2 * r - k), (0, 2 * r - k), (0, 0), (0, 0)))
  # Tap t = p + 2(r-1-s) of phase p is window offset s of the padded input: flip the taps.
  kernel = kernel.reshape(r, 2, r, 2, o, i)[::-1, :, ::-1]  # (s_h, p, s_w, q, O, I)
  kernel = kernel.transpose(0, 2, 5, 1, 3, 4).reshape(r * r * i, 4 * o)
  x = jnp.pad(x, ((0, 0), (r - 1, r - 1), (r - 1, r - 1), (0, 0)))
  m_h, m_w = h + r - 1, w + r - 1
  y = jnp.einsum("nhwk,ko->nhwo", _patches(x, r, r), kernel)  # (N, m_h, m_w, 4O)
  y = y.reshape(n, m_h, m_w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * m_h, 2 * m_w, o)
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
    conv = conv_transpose_stride2 if self.transpose else conv_stride2
    y = conv(x.astype(self.dtype), kernel.astype(self.dtype), resolve_impl(self.impl))
    return y + bias.astype(self.dtype)
