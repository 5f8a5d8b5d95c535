"""The shifted multiply-add depthwise convolution against XLA's grouped convolution."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models import depthwise


@pytest.mark.parametrize("size,k,stride", [
    (8, 3, 2), pytest.param(9, 3, 1, marks=pytest.mark.slow),
    pytest.param(9, 5, 2, marks=pytest.mark.slow), pytest.param(6, 5, 1, marks=pytest.mark.slow)])
def test_taps_match_the_grouped_convolution_and_its_gradients(size, k, stride):
  rng = np.random.default_rng(size + k + stride)
  x = jnp.asarray(rng.normal(size=(2, size, size + 1, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, 1, 4)), jnp.float32)
  np.testing.assert_allclose(depthwise.depthwise_conv(x, w, stride),
                             depthwise.reference(x, w, stride), rtol=1e-5, atol=1e-5)
  def grads(f):
    return jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w, stride))), argnums=(0, 1))(x, w)
  for ours, theirs in zip(grads(depthwise.depthwise_conv), grads(depthwise.reference)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_module_stores_its_kernel_as_nn_conv_does():
  variables = depthwise.DepthwiseConv(5, 2).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 6)))
  assert variables["params"]["kernel"].shape == (5, 5, 1, 6)
