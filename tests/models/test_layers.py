import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from medjax.models.layers import BatchNorm, local_response_norm


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
  ours = jax.vjp(jax.jit(lambda v: local_response_norm(v, *args)), x)[1](g)[0]
  expected = jax.vjp(jax.jit(lambda v: _lrn_by_autodiff(v, *args)), x)[1](g)[0]
  scale = float(jnp.max(jnp.abs(expected)))
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6 * scale)


def test_bfloat16_lrn_is_the_float32_lrn_rounded_once():
  """A bfloat16 window sum of squares would lose digits; the layer widens, normalises and
  rounds its output (and its gradient) once."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(2, 4, 3, 9)) * 30, jnp.bfloat16)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.bfloat16)
  args = (5, 1e-2, 0.75, 2.0)
  lrn = lambda u: local_response_norm(u, *args)
  value_and_dx = jax.jit(lambda v, g: (lrn(v), jax.vjp(lrn, v)[1](g)[0]))
  got, got_dx = value_and_dx(x, g)
  want, want_dx = value_and_dx(x.astype(jnp.float32), g.astype(jnp.float32))
  assert got.dtype == got_dx.dtype == jnp.bfloat16
  np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))
  np.testing.assert_array_equal(got_dx, want_dx.astype(jnp.bfloat16))


def _bn_inputs():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5, 3, 6)) * 3 + 2, jnp.float32)
  return rng, x


@pytest.mark.parametrize("running,dtype", [(True, jnp.float32), (False, jnp.float32),
                                           (True, jnp.bfloat16)],
                         ids=["running-statistics", "batch-statistics", "bfloat16-input"])
def test_batch_norm_is_flax_batch_norm_in_variables_values_updates_and_gradients(running, dtype):
  rng, x = _bn_inputs()
  x = x.astype(dtype)
  ours = BatchNorm(use_running_average=running, momentum=0.9, epsilon=1e-3)
  flax_bn = nn.BatchNorm(use_running_average=running, momentum=0.9, epsilon=1e-3)
  variables = flax_bn.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
      jnp.shape, variables)
  # Statistics and affine away from their initial values, so every term matters.
  variables = jax.tree.map(
      lambda v: v + jnp.asarray(rng.uniform(0.5, 1.5, v.shape), jnp.float32), variables)
  (y, stats), (y_flax, stats_flax) = (
      jax.jit(functools.partial(m.apply, mutable=["batch_stats"]))(variables, x)
      for m in (ours, flax_bn))
  assert y.dtype == y_flax.dtype
  np.testing.assert_array_equal(y, y_flax)
  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_flax)):
    np.testing.assert_array_equal(a, b)
  r = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

  def loss(module):
    def f(params, x):
      y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
      return jnp.vdot(jnp.tanh(y), r)
    return f
  grads, grads_flax = (jax.jit(jax.grad(loss(m), (0, 1)))(variables["params"], x)
                       for m in (ours, flax_bn))
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_flax)):
    assert a.dtype == b.dtype
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))))


@pytest.mark.parametrize("running", [True, False], ids=["running-statistics", "batch-statistics"])
def test_batch_norm_under_mixed_precision_returns_the_compute_dtype(running):
  # The trainer's bfloat16 step casts the parameters, not the float32 batch statistics; the
  # output must stay bfloat16 as Flax's does, or the next layer meets a float32 input and a
  # bfloat16 kernel (the fine-tuning step failed so).
  _, x = _bn_inputs()
  x = x.astype(jnp.bfloat16)
  variables = BatchNorm(use_running_average=running).init(jax.random.PRNGKey(0), x)
  variables = {"params": jax.tree.map(lambda v: v.astype(jnp.bfloat16), variables["params"]),
               "batch_stats": variables["batch_stats"]}
  outputs = [jax.jit(functools.partial(m.apply, mutable=["batch_stats"]))(variables, x)[0]
             for m in (BatchNorm(use_running_average=running),
                       nn.BatchNorm(use_running_average=running))]
  assert outputs[0].dtype == outputs[1].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(outputs[0], np.float32),
                             np.asarray(outputs[1], np.float32), atol=0.05)


def test_batch_norm_keeps_its_input_not_a_centred_copy_for_the_backward_pass():
  # Flax's autodiff keeps x - mean, an activation-sized array written only for the backward
  # pass; ours keeps x, which the layer before has written anyway.
  _, x = _bn_inputs()

  def activation_residuals(module):
    variables = module.init(jax.random.PRNGKey(0), x)
    variables = {**variables, "batch_stats": jax.tree.map(lambda v: v + 0.5,
                                                            variables["batch_stats"])}
    _, backward = jax.vjp(lambda x: module.apply(variables, x), x)
    return [leaf for leaf in jax.tree.leaves(backward) if jnp.shape(leaf) == x.shape]
  ours = activation_residuals(BatchNorm(use_running_average=True))
  assert len(ours) == 1 and (ours[0] == x).all()
  flax_residuals = activation_residuals(nn.BatchNorm(use_running_average=True))
  assert not any(bool((leaf == x).all()) for leaf in flax_residuals)
