"""``medjax.compiler``: the XLA:CPU options take convolutions away from YNNPACK (whose
single-threaded small-channel kernels were the train steps' bottleneck) and leave matrix
products with it; ``compiler.jit`` is ``jax.jit`` otherwise."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import compiler


def _ynn_fusions(fn, *args) -> int:
  hlo = jax.jit(fn, compiler_options=compiler.options() or None).lower(*args).compile().as_text()
  return hlo.count('"kind":"__ynn_fusion"')


@pytest.fixture
def cpu_options():
  if jax.default_backend() != "cpu":
    pytest.skip("the options apply to the CPU backend only")
  if not compiler.options():
    pytest.skip(f"jaxlib {jax.__version__} does not know {sorted(compiler.CPU_OPTIONS)}")
  return compiler.options()


def test_options_on_cpu_are_the_cpu_options(cpu_options):
  assert cpu_options == compiler.CPU_OPTIONS


def test_convolutions_leave_ynnpack_and_matmuls_stay(cpu_options):
  x, w = jnp.ones((2, 16, 16, 20)), jnp.ones((3, 3, 20, 20))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert _ynn_fusions(conv, x, w) == 0
  assert _ynn_fusions(jnp.dot, jnp.ones((64, 64)), jnp.ones((64, 64))) >= 1


def test_jit_is_jax_jit_with_its_arguments():
  @functools.partial(compiler.jit, static_argnames=("power",))
  def f(x, *, power):
    """Doc."""
    return x ** power

  x = jnp.arange(4.0)
  np.testing.assert_array_equal(f(x, power=3), x ** 3)
  np.testing.assert_array_equal(f(x, power=2), x ** 2)
  assert f.__doc__ == "Doc." and f.__name__ == "f"
  donating = compiler.jit(lambda a: a + 1, donate_argnums=0)
  np.testing.assert_array_equal(donating(jnp.zeros(3)), np.ones(3))


def test_jit_inside_another_trace_is_staged_plainly():
  """jax.jit refuses compiler options on a nested call; the wrapper must not pass them."""
  inner = compiler.jit(lambda x: jnp.sin(x) * 2)
  x = jnp.arange(3.0)
  np.testing.assert_allclose(jax.jit(lambda v: inner(v) + 1)(x), np.sin(x) * 2 + 1, rtol=1e-6)
  assert jax.eval_shape(inner, x).shape == (3,)
  np.testing.assert_allclose(jax.jit(lambda: inner(x))(), np.sin(x) * 2, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda v: inner(v).sum())(x), 2 * np.cos(x), rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(inner)(x), np.sin(x) * 2, rtol=1e-6)
