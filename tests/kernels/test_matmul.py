"""medjax.kernels.matmul: float32 products unchanged, narrow products accumulated in float32
with their gradients, and every bfloat16 product on oneDNN's matmul where it has bfloat16
kernels, else (on XLA:CPU) in a form XLA's bfloat16 kernels take."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.kernels import matmul as mm
from tests.compare import numpy_normal
from tests.kernels.hlo import assert_bfloat16_dots, assert_onednn_bfloat16_products


def _value_and_grads(fn, a, b, g):
  value, vjp = jax.vjp(fn, a, b)
  return (value, *vjp(g))


def test_float32_is_the_plain_product_with_its_gradients():
  a, b, g = numpy_normal(0, (7, 5)), numpy_normal(1, (5, 3)), numpy_normal(2, (7, 3))
  for got, want in zip(_value_and_grads(mm.matmul, a, b, g),
                       _value_and_grads(jnp.matmul, a, b, g)):
    np.testing.assert_array_equal(got, want)
  c = numpy_normal(3, (4, 5))
  np.testing.assert_allclose(mm.nt(a, c), a @ c.T, rtol=1e-6)
  np.testing.assert_allclose(mm.tn(a, g), a.T @ g, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(mm.transposed(a), a.T)


def test_wide_float32_weight_gradients_are_transposed_first():
  """The rule: transposed first only for a wide result (the CAE's weight gradients), the
  first-axis contraction for fully connected and pointwise shapes; both forms give the
  product."""
  shape = lambda m, k, n, lanes=8: (jax.ShapeDtypeStruct((m, k), jnp.float32),
                                    jax.ShapeDtypeStruct((m, n), jnp.float32), lanes)
  assert mm._transpose_first(*shape(18432, 2304, 4096))  # CAE encoder and decoder kernels
  assert not mm._transpose_first(*shape(18432, 2304, 4096, 16))  # with AVX-512: not at all
  assert mm._transpose_first(*shape(1024, 512, 2048))
  assert not mm._transpose_first(*shape(64, 4096, 4096))  # AlexNet fc6: batch 64 contracted
  assert not mm._transpose_first(*shape(256, 20480, 800))  # IRMA C fc1: narrow result
  assert not mm._transpose_first(*shape(18432, 4096, 2304))  # more result rows than columns
  assert not mm._transpose_first(*shape(100352, 24, 144))  # EfficientNet pointwise
  assert not mm._transpose_first(*shape(1024, 64, 4096))  # too few result rows
  a, g = numpy_normal(4, (1024, 160)), numpy_normal(5, (1024, 2048))
  assert mm._transpose_first(a, g, 8)
  want = jax.jit(lambda a, g: jax.lax.dot_general(a, g, (((0,), (0,)), ((), ()))))(a, g)
  np.testing.assert_allclose(jax.jit(mm.tn)(a, g), want, rtol=1e-5, atol=1e-4)
  # The transposed form itself, whichever form this host's rule picks.
  np.testing.assert_allclose(jax.jit(lambda a, g: mm.transposed(a) @ g)(a, g), want,
                             rtol=1e-5, atol=1e-4)


def test_bfloat16_product_and_gradients_are_float32_accumulated(bfloat16_route):
  """Against the float32 product of the same bfloat16 values: only the final rounding to
  bfloat16 differs (half an ulp, 2^-9 relative), not a bfloat16 accumulation over K."""
  a, b, g = (numpy_normal(i, s, jnp.bfloat16)
             for i, s in enumerate([(33, 300), (300, 17), (33, 17)]))
  got = _value_and_grads(mm.matmul, a, b, g)
  want = _value_and_grads(jnp.matmul, *(v.astype(jnp.float32) for v in (a, b, g)))
  for x, y in zip(got, want):
    assert x.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(x, np.float32), y, rtol=2 ** -8, atol=1e-6)
  assert mm.tn(a, g).dtype == jnp.float32
  np.testing.assert_allclose(mm.tn(a, g), a.astype(jnp.float32).T @ g.astype(jnp.float32),
                             rtol=1e-5, atol=1e-4)


def test_mixed_dtypes_are_refused():
  with pytest.raises(ValueError, match="cast both"):
    mm.matmul(jnp.ones((2, 2), jnp.bfloat16), jnp.ones((2, 2)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's lowering")
def test_every_bfloat16_product_reaches_the_bfloat16_kernels_on_cpu(bfloat16_route):
  """The point of the module: value, input and weight gradient each compile to oneDNN's
  matmul (three custom calls reading bfloat16, no dot), or without it to a dot of two
  bfloat16 operands inside a YNNPACK fusion. A jaxlib that converts an operand to float32
  first (the slow path) or stops fusing them fails here."""
  a, b = jnp.ones((256, 512), jnp.bfloat16), jnp.ones((512, 384), jnp.bfloat16)

  def step(a, b):
    value, vjp = jax.vjp(mm.matmul, a, b)
    return value, *vjp(value)

  text = jax.jit(step).lower(a, b).compile().as_text()
  if bfloat16_route == "onednn":
    assert_onednn_bfloat16_products(text, 3)
    return
  assert_bfloat16_dots(text, 3)
  assert text.count('"kind":"__ynn_fusion"') >= 3, text
