"""``medjax.kernels.max_pool``'s XLA:CPU form against ``nn.max_pool``: the same values and
the same gradient, ties included, for every window, stride and padding form the networks
use and some they do not (windows smaller or larger than the stride, odd sizes,
asymmetric padding)."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.kernels import max_pool

# Cases beyond the networks' own and one asymmetric padding run in the slow tier.
SLOW = pytest.mark.slow

CASES = [
    ((2, 7, 9, 3), (2, 2), (2, 2), "VALID"),          # IRMA, LeNet; odd rows/columns dropped
    ((2, 55, 55, 4), (3, 3), (2, 2), "VALID"),        # AlexNet: overlapping windows
    pytest.param((2, 13, 11, 2), (3, 3), (2, 2), "SAME", marks=SLOW),
    pytest.param((1, 12, 12, 2), (3, 3), (1, 1), ((1, 1), (1, 1)), marks=SLOW),
    # A window smaller than the stride:
    pytest.param((1, 10, 9, 2), (1, 1), (2, 2), "VALID", marks=SLOW),
    ((1, 17, 15, 2), (5, 3), (3, 2), ((2, 1), (0, 2))),
    pytest.param((1, 8, 8, 1), (2, 2), (1, 1), "VALID", marks=SLOW),
]


@pytest.mark.parametrize("shape, window, strides, padding", CASES)
def test_max_pool_matches_nn_max_pool_with_ties(shape, window, strides, padding):
  # Small integers: most windows hold tied maxima, where select-and-scatter picks the
  # first in row-major order.
  rng = np.random.default_rng(sum(shape))
  x = jnp.asarray(rng.integers(0, 3, shape), jnp.float32)
  reference = lambda v: nn.max_pool(v, window, strides, padding)
  ours = lambda v: max_pool(v, window, strides, padding)
  # Each side as one jitted program (value and gradient), compiled once rather than op by op.
  value_and_vjp = lambda f: jax.jit(lambda v, g: (f(v), jax.vjp(f, v)[1](g)[0]))
  g = jnp.asarray(rng.normal(size=jax.eval_shape(reference, x).shape), jnp.float32)
  got, got_dx = value_and_vjp(ours)(x, g)
  want, expected = value_and_vjp(reference)(x, g)
  np.testing.assert_array_equal(got, want)
  # Overlapping windows add their parts in another order: float32 round-off.
  np.testing.assert_allclose(got_dx, expected, rtol=1e-6, atol=1e-6)
  assert np.count_nonzero(expected) > 0


def test_max_pool_gradient_goes_to_the_first_maximum_only():
  x = jnp.ones((1, 2, 2, 1))
  dx = jax.grad(lambda v: max_pool(v, (2, 2), (2, 2)).sum())(x)
  np.testing.assert_array_equal(dx[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_under_jit_and_vmap():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 9, 9, 2)), jnp.float32)
  f = lambda v: jnp.sum(jnp.sin(max_pool(v, (3, 3), (2, 2))))
  batched = jax.jit(jax.vmap(jax.grad(f)))(x)
  np.testing.assert_allclose(batched[1], jax.jit(jax.grad(f))(x[1]), rtol=1e-6)


def test_bfloat16_max_pool_works_in_float32_and_returns_bfloat16():
  """The maxima are the same values in either dtype, and the overlapping windows' gradient
  parts add in float32 and round once; no compare or select runs on bfloat16, which XLA:CPU
  converts around one op at a time."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 11, 11, 3)), jnp.bfloat16)
  g = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.bfloat16)
  pool = lambda v: max_pool(v, (3, 3), (2, 2))
  value_and_dx = jax.jit(lambda v, g: (pool(v), jax.vjp(pool, v)[1](g)[0]))
  got, got_dx = value_and_dx(x, g)
  want, want_dx = value_and_dx(x.astype(jnp.float32), g.astype(jnp.float32))
  assert got.dtype == got_dx.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got, np.float32), want)
  np.testing.assert_array_equal(got_dx, want_dx.astype(jnp.bfloat16))
  jaxpr = str(jax.make_jaxpr(value_and_dx)(x, g))
  narrow_ops = re.findall(r"bf16\[[^\]]*\] = (max|select_n|add|eq|pad)[ \[]", jaxpr)
  assert not narrow_ops, jaxpr
