"""Every formulation of the strided convs equals Flax's convs, in values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genrl_jax import convs


@pytest.mark.parametrize("impl", ["native", "im2col", "taps", "stride1"])
@pytest.mark.parametrize("size, cin, cout, k", [(64, 3, 8, 4), (31, 8, 16, 4), (7, 5, 6, 5)])
def test_conv_stride2_matches_flax_conv(impl, size, cin, cout, k):
  x = jax.random.normal(jax.random.key(0), (2, size, size, cin))
  ref = nn.Conv(cout, (k, k), strides=(2, 2), padding="VALID")
  params = ref.init(jax.random.key(1), x)
  ours = convs.StridedConv(cout, k, impl=impl)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5, rtol=1e-5)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), g_ours, g_ref)


@pytest.mark.parametrize("impl", ["native", "im2col", "taps", "stride1"])
@pytest.mark.parametrize("size, cin, cout, k", [(1, 16, 8, 5), (5, 8, 4, 5), (13, 4, 3, 6), (4, 3, 2, 3), (6, 3, 5, 4)])
def test_conv_transpose_stride2_matches_flax_conv_transpose(impl, size, cin, cout, k):
  x = jax.random.normal(jax.random.key(0), (2, size, size, cin))
  ref = nn.ConvTranspose(cout, (k, k), strides=(2, 2), padding="VALID", transpose_kernel=True)
  params = ref.init(jax.random.key(1), x)
  ours = convs.StridedConv(cout, k, transpose=True, impl=impl)
  out = ours.apply(params, x)
  assert out.shape == (2, 2 * (size - 1) + k, 2 * (size - 1) + k, cout)
  np.testing.assert_allclose(out, ref.apply(params, x), atol=1e-5, rtol=1e-5)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4), g_ours, g_ref)


def test_auto_impl_choice_and_unknown_impl():
  assert convs.resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu"
                                         else "native")
  assert convs.resolve_impl("taps") == "taps"
  with pytest.raises(ValueError, match="conv_impl='fft'"):
    convs.resolve_impl("fft")
