"""The fast CPU paths (FFT convolution, reshape max-pool) against the direct XLA ops.

The FFT route must be the same function as ``lax.conv_general_dilated`` up to float32
round-off, in value and in both gradients, for odd sizes and every padding form; the
pool must match ``nn.max_pool`` exactly, ties included.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import layers
from medjax.models.lenet import LeNet


def direct(x, kernel, strides=(1, 1), padding="VALID"):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def close(actual, expected):
  """float32 round-off of a sum of ``kh * kw * C`` products: relative to the largest value."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * np.abs(expected).max())


def random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("shape,kernel_hw,padding", [
    ((2, 23, 19, 3), (9, 9), "VALID"),
    ((1, 17, 17, 2), (15, 15), "VALID"),
    ((2, 20, 13, 3), (9, 11), "SAME"),
    ((1, 14, 15, 1), (10, 9), "SAME"),
    ((2, 16, 11, 2), (9, 9), ((3, 1), (0, 4))),
])
def test_fft_conv_matches_direct_forward_and_gradients(shape, kernel_hw, padding):
  x = random(shape, 0)
  kernel = random((*kernel_hw, shape[-1], 5), 1) * 0.1
  close(layers.fft_conv(x, kernel, padding), direct(x, kernel, padding=padding))
  out_shape = direct(x, kernel, padding=padding).shape
  cotangent = random(out_shape, 2)

  def loss(conv):
    return lambda x, k: jnp.sum(conv(x, k) * cotangent)

  fast = jax.grad(loss(lambda x, k: layers.fft_conv(x, k, padding)), argnums=(0, 1))(x, kernel)
  slow = jax.grad(loss(lambda x, k: direct(x, k, padding=padding)), argnums=(0, 1))(x, kernel)
  for a, b in zip(fast, slow):
    close(a, b)


def test_selector_takes_fft_only_where_it_pays_and_falls_back_otherwise():
  assert layers.use_fft((15, 15), (1, 1))
  assert not layers.use_fft((3, 3), (1, 1))
  assert not layers.use_fft((5, 5), (1, 1))
  assert not layers.use_fft((11, 11), (4, 4))  # Strided: direct.
  # Strided large kernels go the direct way and still give the direct result.
  x, kernel = random((1, 31, 29, 2), 3), random((11, 11, 2, 4), 4)
  np.testing.assert_array_equal(layers.conv(x, kernel, (4, 4), "VALID"),
                                direct(x, kernel, (4, 4), "VALID"))


def test_conv_module_is_a_drop_in_for_nn_conv():
  x = random((2, 21, 21, 3), 5)
  ours = layers.Conv(4, (9, 9), padding="SAME")
  theirs = nn.Conv(4, (9, 9), padding="SAME")
  variables = theirs.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
      jnp.shape, variables)
  close(ours.apply(variables, x), theirs.apply(variables, x))


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 8, 8, 2), (2, 11, 6, 1)])
def test_max_pool_matches_nn_max_pool_with_ties(shape):
  # Small integers: most windows hold tied maxima, where select-and-scatter picks the first.
  x = jnp.asarray(np.random.default_rng(6).integers(0, 3, shape), jnp.float32)
  reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), reference(x))
  g = random(reference(x).shape, 7)
  np.testing.assert_array_equal(jax.vjp(layers.max_pool_2x2, x)[1](g)[0],
                                jax.vjp(reference, x)[1](g)[0])


def test_lenet_fast_path_matches_direct_path(monkeypatch):
  model = LeNet(kernel_size=9)  # 81 taps: on the FFT side of the threshold.
  x = random((2, 36, 36, 1), 8)
  variables = model.init(jax.random.PRNGKey(1), x)

  def loss(params):
    logits, features = model.apply({"params": params}, x)
    return jnp.sum(logits) + jnp.sum(features["pre_logits"])

  fast = loss(variables["params"]), jax.grad(loss)(variables["params"])
  monkeypatch.setattr(layers, "FFT_MIN_TAPS", math.inf)
  slow = loss(variables["params"]), jax.grad(loss)(variables["params"])
  close(fast[0], slow[0])
  jax.tree.map(close, fast[1], slow[1])
