"""medjax.kernels.Dense: nn.Dense's parameters and function, with its bfloat16 products on
oneDNN's matmul where it has bfloat16 kernels, else on XLA:CPU's bfloat16 kernels."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.kernels import REFERENCE, XLA_CPU, Dense, precision
from tests.compare import numpy_normal
from tests.kernels.hlo import assert_bfloat16_dots, assert_onednn_bfloat16_products


@pytest.mark.parametrize("kernels", [XLA_CPU, REFERENCE])
@pytest.mark.parametrize("shape", [(6, 40), (2, 3, 40)])
def test_float32_is_nn_dense_in_parameters_value_and_gradients(kernels, shape):
  ours, theirs = Dense(24, kernels=kernels), nn.Dense(24)
  x = numpy_normal(0, shape)
  params = ours.init(jax.random.PRNGKey(0), x)
  want_params = theirs.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(params) == jax.tree.structure(want_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want_params)):
    np.testing.assert_array_equal(a, b)
  params = jax.tree.map(lambda p: p + 0.1, params)  # A non-zero bias.
  loss = lambda module: lambda p, v: jnp.sum(jnp.sin(module.apply(p, v)))
  got = jax.jit(jax.value_and_grad(loss(ours), argnums=(0, 1)))(params, x)
  want = jax.jit(jax.value_and_grad(loss(theirs), argnums=(0, 1)))(params, x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_without_bias_and_with_float32_bias_the_dtype_is_the_promotion():
  x = numpy_normal(0, (4, 8), dtype=jnp.bfloat16)
  no_bias = Dense(3, use_bias=False)
  params = precision.cast(no_bias.init(jax.random.PRNGKey(0), x), jnp.bfloat16)
  assert "bias" not in params["params"]
  assert no_bias.apply(params, x).dtype == jnp.bfloat16
  # Parameters left in float32 promote a bfloat16 input, as nn.Dense does.
  layer = Dense(3)
  params = layer.init(jax.random.PRNGKey(0), x)
  assert layer.apply(params, x).dtype == nn.Dense(3).apply(params, x).dtype == jnp.float32


def test_bfloat16_value_and_gradients_track_float32(bfloat16_route):
  layer = Dense(64)
  x = numpy_normal(0, (32, 300), dtype=jnp.bfloat16)
  params = precision.cast(layer.init(jax.random.PRNGKey(0), x), jnp.bfloat16)
  params = jax.tree.map(lambda p: p + jnp.asarray(0.05, p.dtype), params)
  loss = lambda p, v: jnp.sum(layer.apply(p, v).astype(jnp.float32) ** 2)
  grad = jax.jit(jax.grad(loss, argnums=(0, 1)))  # Compiled once per dtype, not op by op.
  got = grad(params, x)
  want = grad(precision.to_float32(params), x.astype(jnp.float32))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert a.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=2 ** -6,
                               atol=2 ** -6 * float(jnp.max(jnp.abs(b))))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's lowering")
def test_bfloat16_layer_compiles_every_product_to_a_bfloat16_dot(bfloat16_route):
  """nn.Dense's bfloat16 layer asks for bfloat16 results (XLA:CPU's float32-rate path);
  ours has value, input and kernel gradient as bfloat16 x bfloat16 -> float32 products,
  oneDNN's or XLA's dots."""
  layer = Dense(384)
  x = jnp.ones((256, 512), jnp.bfloat16)
  params = precision.cast(layer.init(jax.random.PRNGKey(0), x), jnp.bfloat16)

  def step(p, v):
    y, vjp = jax.vjp(lambda p, v: layer.apply(p, v), p, v)
    return y, vjp(y)

  text = jax.jit(step).lower(params, x).compile().as_text()
  if bfloat16_route == "onednn":
    assert_onednn_bfloat16_products(text, 3)
  else:
    assert_bfloat16_dots(text, 3)
