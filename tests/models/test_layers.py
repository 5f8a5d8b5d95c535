import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.models.layers import local_response_norm


def test_lrn_matches_caffe_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
  size, alpha, beta, k = 5, 1e-2, 0.75, 2.0
  expected = np.empty_like(x)
  for c in range(7):
    lo, hi = max(0, c - 2), min(7, c + 3)
    expected[..., c] = x[..., c] / (k + alpha / size * (x[..., lo:hi] ** 2).sum(-1)) ** beta
  np.testing.assert_allclose(local_response_norm(x, size, alpha, beta, k), expected, rtol=1e-5)


def _lrn_by_autodiff(x, size, alpha, beta, k):
  """The LRN formula as written, for JAX to differentiate."""
  pads = ((0, 0), (0, 0), (0, 0), (size // 2, size - 1 - size // 2))
  window = jax.lax.reduce_window(jnp.square(x), 0.0, jax.lax.add, (1, 1, 1, size),
                                 (1, 1, 1, 1), pads)
  return x / jnp.power(k + alpha / size * window, beta)


@pytest.mark.parametrize("size", [5, 4, 3, 1])
def test_lrn_gradient_equals_autodiff_of_the_formula(size):
  # Even sizes make the window asymmetric, so the gradient's mirrored window is checked.
  rng = np.random.default_rng(size)
  x = jnp.asarray(rng.normal(size=(2, 4, 3, 9)) * 30, jnp.float32)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  args = (size, 1e-2, 0.75, 2.0)
  ours = jax.vjp(lambda v: local_response_norm(v, *args), x)[1](g)[0]
  expected = jax.vjp(lambda v: _lrn_by_autodiff(v, *args), x)[1](g)[0]
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * scale)
