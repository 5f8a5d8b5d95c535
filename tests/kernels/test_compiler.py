"""``medjax.kernels.compiler``: the XLA:CPU options are applied on CPU, and ``jit`` is
``jax.jit`` otherwise; medjax imports no private JAX module. Whether XLA then keeps convolutions away from YNNPACK is jaxlib's
behaviour, checked by ``python -m benchmarks.xla_cpu_checks``, not here."""
import ast
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import medjax
from medjax.kernels import compiler


@pytest.fixture
def cpu_options():
  if jax.default_backend() != "cpu":
    pytest.skip("the options apply to the CPU backend only")
  if not compiler.options():
    pytest.skip(f"jaxlib {jax.__version__} does not know {sorted(compiler.CPU_OPTIONS)}")
  return compiler.options()


def test_options_on_cpu_are_the_cpu_options(cpu_options):
  assert cpu_options == compiler.CPU_OPTIONS


@pytest.mark.parametrize("name, kwargs, shape", [
    ("lenet_ova", {}, (64, 64, 1)),
    pytest.param("irma_cnn", {"variant": "C"}, (32, 32, 1), marks=pytest.mark.slow)])
def test_once_compiles_initialisation_to_the_same_bits(cpu_options, name, kwargs, shape):
  """``once=True`` (LLVM -O1) must change compile time only: every initial parameter is the
  bit pattern the default options give."""
  from medjax.models import registry
  model = registry.get_model(name, num_classes=3, **kwargs)

  def init(rng):
    return model.init({"params": rng, "dropout": rng}, jnp.zeros((1, *shape)), train=False)
  assert compiler.options(once=True) == {**cpu_options, **compiler.ONCE_OPTIONS}
  fast, default = (compiler.jit(init, once=once)(jax.random.PRNGKey(3)) for once in (True, False))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(fast), jax.tree.leaves(default)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


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


def test_jax_refusing_options_inside_a_trace_is_recognised(cpu_options):
  """jit falls back to the plain jax.jit on this refusal: if a JAX release words it
  otherwise, this fails rather than every nested call."""
  with_options = jax.jit(lambda x: x + 1, compiler_options=cpu_options)
  with pytest.raises(ValueError) as refusal:
    jax.jit(lambda: with_options(1.0))()
  assert compiler._nested_options_error(refusal.value)
  assert not compiler._nested_options_error(ValueError("a user's own error"))


def test_no_private_jax_imports():
  private = []
  for path in Path(medjax.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      private += [f"{path}: {n}" for n in names if n.startswith(("jax._src", "jaxlib."))]
  assert not private
