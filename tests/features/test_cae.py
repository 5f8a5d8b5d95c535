"""The zero-bias convolutional auto-encoder: tied weights, zero-bias encoding, training."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax.features import cae
from tests.compare import numpy_normal, numpy_uniform


def _encoder_conv(params, x):
  return jax.lax.conv_general_dilated(x, params["w"], (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _params(in_channels=3, num_filters=4, seed=0):
  params = cae.init(jax.random.key(seed), in_channels, num_filters)
  params["b_enc"] = jnp.linspace(-0.5, 0.5, num_filters)
  params["b_dec"] = jnp.linspace(0.1, 0.3, in_channels)
  return params


def test_init_draws_the_glorot_uniform_kernel_of_its_shape():
  """``init``, compiled at initialisation's optimisation level, draws the bits an eager
  ``jax.random.uniform`` of the kernel's shape draws."""
  key = jax.random.key(5)
  limit = (6.0 / (9 * 20 + 9 * 24)) ** 0.5
  want = jax.random.uniform(key, (3, 3, 20, 24), jnp.float32, -limit, limit)
  np.testing.assert_array_equal(cae.init(key, 20, 24)["w"], want)


def test_decoder_kernel_is_flipped_transposed_encoder_kernel():
  params = _params()
  w, w_dec = np.asarray(params["w"]), np.asarray(cae.decoder_kernel(params))
  assert w_dec.shape == (3, 3, 4, 3)
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(w_dec[i, j], w[2 - i, 2 - j].T)


def test_decoder_convolution_is_transposed_encoder_convolution():
  params = _params()
  params["b_dec"] = jnp.zeros(3)
  h = jax.nn.relu(numpy_normal(1, (2, 5, 6, 4)))
  x = numpy_normal(2, (2, 5, 6, 3))

  @jax.jit  # One compilation for every quantity compared below.
  def quantities(params, h, x):
    ref = jax.lax.conv_transpose(h, params["w"], strides=(1, 1), padding="SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                 transpose_kernel=True)
    linear_dec = jax.linear_transpose(lambda v: _encoder_conv(params, v), x)(h)[0]
    return (cae.decode(params, h), jax.nn.relu(ref), linear_dec,
            jnp.vdot(_encoder_conv(params, x), h), jnp.vdot(x, linear_dec))

  decoded, ref, linear_dec, forward_dot, adjoint_dot = quantities(params, h, x)
  np.testing.assert_allclose(decoded, ref, rtol=1e-5, atol=1e-5)
  # Adjoint identity <conv(x), h> == <x, conv~(h)> of the linear (bias-free) parts.
  np.testing.assert_allclose(forward_dot, adjoint_dot, rtol=1e-4)
  np.testing.assert_allclose(jax.nn.relu(linear_dec), decoded, rtol=1e-5, atol=1e-5)


def test_zero_bias_encoding():
  params = _params()
  x = numpy_uniform(3, (2, 6, 6, 3))
  zero_bias = cae.encode(params, x)
  biased = cae.encode(params, x, zero_bias=False)
  assert not np.allclose(zero_bias, biased)
  conv = _encoder_conv(params, x)
  np.testing.assert_allclose(cae.hidden(params, x, zero_bias=True), jax.nn.relu(conv),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(zero_bias, cae.max_pool(jax.nn.relu(conv)), rtol=1e-6, atol=1e-6)
  params["b_enc"] = jnp.zeros(4)
  np.testing.assert_array_equal(cae.encode(params, x, zero_bias=False), zero_bias)
  np.testing.assert_array_equal(cae.features(params, x), zero_bias.reshape(2, -1))


def test_max_unpool_keeps_window_maxima_at_argmax():
  h = jnp.array([[1.0, 5.0, 0.0, 2.0, 7.0],
                 [3.0, 2.0, 2.0, 2.0, 1.0],
                 [0.0, 0.0, 4.0, 9.0, 1.0]])[None, :, :, None]
  # The second window ties at 2: the first position in row-major order wins. The odd last
  # row and column are outside every window and come back as zeros.
  expected = np.array([[0.0, 5.0, 0.0, 2.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(cae.max_unpool(h)[0, :, :, 0], expected)
  np.testing.assert_array_equal(cae.max_pool(h)[0, :, :, 0], [[5.0, 2.0]])


def test_loss_is_half_sum_squared_error_per_example():
  params = _params()
  x = numpy_uniform(4, (3, 6, 6, 3))
  y, loss = jax.jit(lambda p, v: (cae.reconstruct(p, v), cae.loss(p, v)))(params, x)
  assert y.shape == x.shape
  np.testing.assert_allclose(loss, 0.5 * np.sum((np.asarray(y) - x) ** 2) / 3, rtol=1e-6)


@pytest.mark.slow
def test_sgd_decreases_loss():
  params = cae.init(jax.random.key(0), 8, 16)
  x = numpy_uniform(1, (32, 6, 6, 8))
  optimizer = optax.sgd(2e-3)
  opt_state = optimizer.init(params)
  params, opt_state, losses = cae.train_steps(params, opt_state, (x,) * 8, optimizer)
  losses = [float(v) for v in losses]
  assert losses[-1] < 0.8 * losses[0]
  assert all(b < a for a, b in zip(losses, losses[1:]))
  grads = jax.grad(cae.loss)(params, x)
  assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


def test_summed_loss_steps_batch_size_times_further():
  """``reduction="sum"`` is eq. 3 summed over the batch: with plain SGD, one step moves the
  parameters batch-size times as far as the mean's step does."""
  init = cae.init(jax.random.key(0), 8, 16)
  x = numpy_uniform(1, (12, 6, 6, 8))
  optimizer = optax.sgd(1e-4)
  moved = {}
  for reduction in cae.REDUCTIONS:
    params = jax.tree.map(jnp.copy, init)
    params, _, (value,) = cae.train_steps(params, optimizer.init(params), (x,), optimizer,
                                          reduction=reduction)
    moved[reduction] = (jax.tree.map(lambda a, b: a - b, params, init), value)
  np.testing.assert_allclose(moved["sum"][1], 12 * moved["mean"][1], rtol=1e-5)
  for s, m in zip(jax.tree.leaves(moved["sum"][0]), jax.tree.leaves(moved["mean"][0])):
    # Differences of float32 parameters near 0.1: absolute rounding about 1e-8.
    np.testing.assert_allclose(s, 12 * m, rtol=1e-3, atol=1e-6)
  with pytest.raises(ValueError, match="expected one of"):
    cae.train_steps(init, optimizer.init(init), (x,), optimizer, reduction="max")


def test_bfloat16_steps_keep_float32_state_and_track_float32():
  """``compute_dtype="bfloat16"``: parameters, optimiser state, loss values and features stay
  float32 and follow the float32 run to bfloat16 accuracy (the 8-bit significand)."""
  init = cae.init(jax.random.key(0), 8, 16)
  batches = tuple(numpy_uniform(i, (16, 6, 6, 8)) for i in range(3))
  optimizer = optax.sgd(1e-3, momentum=0.9)
  runs = {}
  for dtype in ("float32", "bfloat16"):
    params = jax.tree.map(jnp.copy, init)
    runs[dtype] = cae.train_steps(params, optimizer.init(params), batches, optimizer,
                                  compute_dtype=dtype)
  for leaf in jax.tree.leaves(runs["bfloat16"]):
    assert leaf.dtype == jnp.float32
  np.testing.assert_allclose(runs["bfloat16"][2], runs["float32"][2], rtol=1e-2)
  assert not np.array_equal(runs["bfloat16"][2], runs["float32"][2])
  for a, b in zip(jax.tree.leaves(runs["bfloat16"][0]), jax.tree.leaves(runs["float32"][0])):
    np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3)
  wide, narrow = (cae.features(init, batches[0], dtype) for dtype in ("float32", "bfloat16"))
  assert narrow.dtype == jnp.float32
  np.testing.assert_allclose(narrow, wide, rtol=2 ** -6, atol=2 ** -7 * float(wide.max()))


@pytest.mark.slow
def test_steps_in_one_call_equal_steps_in_separate_calls():
  """Four steps per call (the config's default) give what four calls of one step give."""
  init = cae.init(jax.random.key(0), 8, 16)
  batches = tuple(numpy_uniform(i, (16, 6, 6, 8)) for i in range(4))
  optimizer = optax.sgd(1e-3, momentum=0.9)
  params = jax.tree.map(jnp.copy, init)  # train_steps donates its inputs.
  together = cae.train_steps(init, optimizer.init(init), batches, optimizer)
  opt_state, values = optimizer.init(params), []
  for batch in batches:
    params, opt_state, (value,) = cae.train_steps(params, opt_state, (batch,), optimizer)
    values.append(value)
  np.testing.assert_allclose(together[2], values, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(together[:2]), jax.tree.leaves((params, opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_paper_shapes():
  params = jax.eval_shape(lambda: cae.init(jax.random.key(0), 256, 4096))
  x = jax.ShapeDtypeStruct((512, 6, 6, 256), jnp.float32)
  assert params["w"].shape == (3, 3, 256, 4096)
  assert jax.eval_shape(lambda p, v: cae.encode(p, v), params, x).shape == (512, 3, 3, 4096)
  assert jax.eval_shape(cae.reconstruct, params, x).shape == (512, 6, 6, 256)
  assert jax.eval_shape(cae.features, params, x).shape == (512, 3 * 3 * 4096)
  assert jax.eval_shape(cae.loss, params, x).shape == ()


@pytest.mark.slow
@pytest.mark.parametrize("channels, filters, side", [(3, 8, 6), (8, 16, 7)])
def test_loss_gradient_is_autodiffs(channels, filters, side):
  """``loss``'s hand-arranged gradient (encoder and decoder kernel terms, column-sum biases,
  the input's two paths) against autodiff of the same loss written plainly; the odd side
  leaves a row and column outside every pooling window, and non-zero biases make some
  hidden units and outputs inactive."""
  params = cae.init(jax.random.key(0), channels, filters)
  params["b_enc"] = 0.3 * numpy_normal(2, (filters,))
  params["b_dec"] = 0.3 * numpy_normal(3, (channels,))
  x = numpy_uniform(1, (4, side, side, channels))

  def plain_loss(p, v):
    residual = cae.reconstruct(p, v) - v
    return 0.5 * jnp.sum(residual * residual) / v.shape[0]

  value, grads = jax.value_and_grad(cae.loss, argnums=(0, 1))(params, x)
  expected_value, expected = jax.value_and_grad(plain_loss, argnums=(0, 1))(params, x)
  np.testing.assert_allclose(value, expected_value, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads, expected)
  # The inactive units are there: the masks have something to do.
  assert 0 < float(jnp.mean(cae.hidden(params, x, zero_bias=False) > 0)) < 1


def test_loss_converged():
  assert not cae.loss_converged([5.0, 4.0, 3.9], rtol=0.0, patience=2)
  assert not cae.loss_converged([5.0, 4.0], rtol=0.1, patience=2)  # too few epochs
  assert not cae.loss_converged([5.0, 4.0, 3.0], rtol=0.1, patience=2)
  assert cae.loss_converged([5.0, 4.0, 3.9, 3.95], rtol=0.1, patience=2)
