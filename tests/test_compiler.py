"""``medjax.compiler``: the XLA:CPU options are applied on CPU, and ``compiler.jit`` is
``jax.jit`` otherwise. Whether XLA then keeps convolutions away from YNNPACK is jaxlib's
behaviour, checked by ``python -m benchmarks.xla_cpu_checks``, not here."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import compiler


@pytest.fixture
def cpu_options():
  if jax.default_backend() != "cpu":
    pytest.skip("the options apply to the CPU backend only")
  if not compiler.options():
    pytest.skip(f"jaxlib {jax.__version__} does not know {sorted(compiler.CPU_OPTIONS)}")
  return compiler.options()


def test_options_on_cpu_are_the_cpu_options(cpu_options):
  assert cpu_options == compiler.CPU_OPTIONS


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
