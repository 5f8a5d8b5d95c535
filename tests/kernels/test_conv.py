"""The XLA:CPU forms (FFT convolution, per-tap kernel gradient, 1 x 1 matmul, depthwise
tap sum, patches, Winograd) against the direct XLA ops, alone, through the façade
(``kernels="xla_cpu"`` against ``kernels="reference"``) and inside the models built with
either choice.

The FFT, tap-gradient and matmul routes must be the same function as
``lax.conv_general_dilated`` up to float32 round-off, in value and in both gradients, for
odd sizes, 1 and 20 channels and every padding form.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import kernels
from medjax.kernels import convolution as conv_lib
from medjax.kernels import depthwise, fft, isa, onednn, patches, taps, winograd
from medjax.models.efficientnet_lite import EfficientNetLite0
from medjax.models.irma_cnn import IrmaCNN
from medjax.models.lenet import LeNet
from tests.compare import numpy_normal, random_variables

# Each algorithm's test keeps one to three of its shapes in the fast tier (the uneven or
# strided forms, which take the most code); the others run with the slow tests.
SLOW = pytest.mark.slow


@pytest.fixture(autouse=True)
def xla_forms(monkeypatch):
  """These are the XLA forms' tests: oneDNN's convolutions, which replace several of them
  where they are built, are tested in test_onednn.py."""
  monkeypatch.setattr(onednn, "available", lambda: False)


def direct(x, kernel, strides=(1, 1), padding="VALID", feature_group_count=1):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=feature_group_count)


def close(actual, expected):
  """float32 round-off of a sum of ``kh * kw * C`` products: relative to the largest value."""
  expected = np.asarray(expected)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("shape,kernel_hw,padding", [
    pytest.param((2, 23, 19, 3), (9, 9), "VALID", marks=SLOW),
    pytest.param((1, 17, 17, 2), (15, 15), "VALID", marks=SLOW),
    pytest.param((2, 20, 13, 3), (9, 11), "SAME", marks=SLOW),
    pytest.param((1, 14, 15, 1), (10, 9), "SAME", marks=SLOW),
    ((2, 16, 11, 2), (9, 9), ((3, 1), (0, 4))),
])
def test_fft_conv_matches_direct_forward_and_gradients(shape, kernel_hw, padding):
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, shape[-1], 5)) * 0.1
  assert_conv_matches_direct(lambda x, k: fft.fft_conv(x, k, padding), x, kernel, padding)


def assert_matches_reference(ours, reference, x, kernel):
  """``ours(x, kernel)`` against ``reference``: value, input and kernel gradients (each side
  jitted: one compilation per program instead of one per op)."""
  expected, slow = jax.vjp(jax.jit(reference), x, kernel)
  y, fast = jax.vjp(jax.jit(ours), x, kernel)
  close(y, expected)
  cotangent = numpy_normal(2, expected.shape)
  for a, b in zip(fast(cotangent), slow(cotangent)):
    close(a, b)


def assert_conv_matches_direct(conv, x, kernel, padding):
  """``conv(x, kernel)`` against the direct convolution (:func:`assert_matches_reference`)."""
  assert_matches_reference(conv, lambda x, k: direct(x, k, padding=padding), x, kernel)


@pytest.mark.parametrize("shape,kernel_hw,out_channels,padding", [
    pytest.param((3, 17, 13, 1), (3, 3), 20, "SAME", marks=SLOW),
    pytest.param((2, 15, 15, 20), (3, 3), 20, "SAME", marks=SLOW),
    pytest.param((5, 9, 11, 20), (3, 3), 7, "VALID", marks=SLOW),
    pytest.param((2, 12, 9, 1), (5, 5), 20, "SAME", marks=SLOW),
    ((1, 10, 13, 3), (3, 5), 4, ((2, 0), (1, 3))),
])
@pytest.mark.parametrize("chunk_floats", [2 ** 20, 100], ids=["one-chunk", "many-chunks"])
def test_tap_grad_conv_matches_direct_forward_and_gradients(shape, kernel_hw, out_channels,
                                                            padding, chunk_floats):
  # 100 floats per chunk splits the batch into single examples, exercising the scan over
  # chunks; 2 ** 20 takes the whole batch at once.
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, shape[-1], out_channels)) * 0.1
  pads = conv_lib.explicit_pads(shape[1:3], kernel_hw, padding)
  assert_conv_matches_direct(lambda x, k: taps.tap_grad_conv(x, k, pads, chunk_floats), x,
                             kernel, padding)
  assert_conv_matches_direct(lambda x, k: kernels.conv(x, k, padding=padding), x, kernel, padding)


@pytest.mark.parametrize("shape,kernel_hw,out_channels,padding", [
    ((2, 9, 10, 20), (3, 3), 20, "SAME"),
    ((1, 8, 7, 21), (3, 2), 5, ((2, 0), (1, 3))),
    pytest.param((2, 11, 9, 44), (5, 5), 20, "VALID", marks=SLOW),
])
def test_padded_channels_conv_matches_direct_forward_and_gradients(shape, kernel_hw,
                                                                   out_channels, padding,
                                                                   monkeypatch):
  """Zero input channels up to a multiple of 8 change no value and no gradient, and the
  padding is cut off the input gradient again."""
  monkeypatch.setattr(isa, "vector_floats", lambda: 8)  # The AVX2 route on any host.
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, shape[-1], out_channels)) * 0.1
  assert kernels.conv_algorithm(kernel.shape, (1, 1)) == "padded_channels"
  assert_conv_matches_direct(lambda x, k: kernels.conv(x, k, padding=padding), x, kernel, padding)
  dx, dk = jax.grad(lambda x, k: jnp.sum(kernels.conv(x, k, padding=padding)), (0, 1))(x, kernel)
  assert dx.shape == x.shape and dk.shape == kernel.shape


def test_batch_chunks_divide_the_batch():
  # IRMA's layers at batch 256: x and g of one example are H * W * (C + 20) floats.
  budget = taps.TAP_GRAD_CHUNK_FLOATS
  assert kernels.batch_chunk(256, 128 * 128 * 21, budget) == 2
  assert kernels.batch_chunk(256, 128 * 128 * 40, budget) == 1
  assert kernels.batch_chunk(256, 64 * 64 * 40, budget) == 4
  assert kernels.batch_chunk(256, 32 * 32 * 40, budget) == 16
  assert kernels.batch_chunk(6, 2 ** 18, budget) == 3  # 4 examples fit, but 4 does not divide 6.
  assert kernels.batch_chunk(7, 64, budget) == 7
  assert kernels.batch_chunk(2, 2 ** 21, budget) == 1


@pytest.mark.parametrize("shape,kernel_hw,strides,padding", [
    pytest.param((2, 9, 11, 6), (3, 3), (1, 1), "SAME", marks=SLOW),
    # TF "SAME" at stride 2: the extra pad goes bottom/right.
    pytest.param((2, 10, 9, 5), (3, 3), (2, 2), "SAME", marks=SLOW),
    pytest.param((1, 13, 12, 4), (5, 5), (2, 2), "SAME", marks=SLOW),
    pytest.param((2, 11, 11, 3), (5, 5), (1, 1), "VALID", marks=SLOW),
    ((1, 8, 9, 4), (3, 5), (2, 1), ((2, 0), (1, 3))),
])
def test_depthwise_conv_matches_grouped_direct_forward_and_gradients(shape, kernel_hw, strides,
                                                                     padding):
  channels = shape[-1]
  x, kernel = numpy_normal(0, shape), numpy_normal(1, (*kernel_hw, 1, channels))
  reference = lambda x, k: direct(x, k, strides, padding, feature_group_count=channels)
  assert_matches_reference(lambda x, k: conv_lib.depthwise_conv(x, k, strides, padding),
                           reference, x, kernel)
  facade = jax.jit(lambda x, k: kernels.conv(x, k, strides, padding,
                                             feature_group_count=channels))
  close(facade(x, kernel), jax.jit(reference)(x, kernel))


@pytest.mark.parametrize("chunk_floats", [1, 2 ** 19], ids=["one-image-chunks", "one-chunk"])
def test_depthwise_kernel_gradient_is_the_same_over_batch_chunks(chunk_floats):
  x, kernel = numpy_normal(0, (3, 10, 9, 5)), numpy_normal(1, (3, 3, 1, 5))
  strides, padding = (2, 2), "SAME"
  pads = conv_lib.explicit_pads(x.shape[1:3], (3, 3), padding, strides)
  reference = lambda k: direct(x, k, strides, padding, feature_group_count=5)
  g = numpy_normal(2, reference(kernel).shape)
  expected, = jax.vjp(reference, kernel)[1](g)
  close(depthwise._depthwise_kernel_grad(x, g, (3, 3), strides, pads, chunk_floats), expected)


@pytest.mark.parametrize("kernel_hw,strides,padding", [
    pytest.param((3, 3), (1, 1), "SAME", marks=SLOW),
    pytest.param((5, 5), (1, 1), "SAME", marks=SLOW), ((3, 5), (1, 1), ((2, 0), (1, 3))),
    pytest.param((3, 3), (1, 1), "VALID", marks=SLOW), ((3, 3), (1, 1), ((3, 0), (0, 0))),
    ((5, 5), (2, 2), "SAME")],
    ids=["3x3", "5x5", "asymmetric", "valid", "pad-beyond-the-kernel", "stride-2"])
def test_depthwise_input_gradient_is_the_transpose_of_the_sum(kernel_hw, strides, padding):
  x, kernel = numpy_normal(0, (2, 9, 8, 5)), numpy_normal(1, (*kernel_hw, 1, 5))
  pads = conv_lib.explicit_pads(x.shape[1:3], kernel_hw, padding, strides)
  forward = lambda v: depthwise.depthwise_sum(v, kernel, strides, pads)
  g = numpy_normal(2, forward(x).shape)
  expected = jax.jit(lambda g: jax.linear_transpose(forward, x)(g)[0])(g)
  grad = lambda g: depthwise._depthwise_input_grad(g, kernel, strides, pads, x.shape)
  close(jax.jit(grad)(g), expected)
  # Stride 1 with pads the kernel can cover takes the flipped sum (its kernel reversed).
  flipped = "rev" in str(jax.make_jaxpr(grad)(g))
  assert flipped == (strides == (1, 1) and padding != ((3, 0), (0, 0)))


def test_depthwise_kernel_gradient_reduces_every_tap_of_a_chunk_at_once():
  x, g = numpy_normal(0, (2, 9, 8, 5)), numpy_normal(1, (2, 9, 8, 5))
  jaxpr = str(jax.make_jaxpr(lambda x, g: depthwise._depthwise_kernel_grad(
      x, g, (3, 3), (1, 1), ((1, 1), (1, 1))))(x, g))
  assert jaxpr.count("reduce_sum") == 0 and jaxpr.count(" reduce[") == 1, jaxpr


def test_bfloat16_depthwise_kernel_gradient_loops_over_float32():
  """The chunk loop reads inputs widened once beforehand; a loop over bfloat16 arrays
  converts every view inside XLA:CPU's reduction, 2.5x slower (docs/performance.md)."""
  x, g = (numpy_normal(i, (2, 9, 8, 5)).astype(jnp.bfloat16) for i in range(2))
  jaxpr = jax.make_jaxpr(lambda x, g: depthwise._depthwise_kernel_grad(
      x, g, (3, 3), (1, 1), ((1, 1), (1, 1))))(x, g).jaxpr
  loop, = [eqn for eqn in jaxpr.eqns if eqn.primitive.name in ("scan", "while")]
  arrays = [v.aval.dtype for v in loop.invars if v.aval.ndim == 4]
  assert arrays == [jnp.float32, jnp.float32], loop
  # Nor is anything padded in bfloat16, forward or backward: XLA:CPU pads in float32 and
  # rounds back, a round trip a fusion repeats for every tap that reads the padded array.
  kernel = numpy_normal(2, (3, 3, 1, 5)).astype(jnp.bfloat16)
  step = lambda x, k: jax.vjp(lambda x, k: kernels.conv(x, k, (1, 1), "SAME",
                                                        feature_group_count=5), x, k)[1](x)
  text = str(jax.make_jaxpr(step)(x, kernel))
  assert "pad" in text and not re.findall(r"bf16\[[^\]]*\] = pad", text), text


@pytest.mark.parametrize("shape,kernel_hw,out_channels,groups,strides,padding", [
    ((2, 9, 9, 8), (5, 5), 6, 2, (1, 1), ((2, 2), (2, 2))),  # AlexNet conv2, small.
    ((2, 10, 11, 6), (3, 3), 9, 3, (2, 2), "SAME"),
    pytest.param((1, 8, 8, 4), (1, 1), 4, 2, (1, 1), "VALID", marks=SLOW),
])
def test_split_groups_matches_grouped_direct_forward_and_gradients(shape, kernel_hw,
                                                                   out_channels, groups,
                                                                   strides, padding):
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, shape[-1] // groups, out_channels))
  assert kernels.conv_algorithm(kernel.shape, strides, groups) == "split_groups"
  assert_matches_reference(
      lambda x, k: kernels.conv(x, k, strides, padding, feature_group_count=groups),
      lambda x, k: direct(x, k, strides, padding, feature_group_count=groups), x, kernel)


@pytest.mark.parametrize("shape,kernel_hw,out_channels,padding", [
    ((3, 6, 6, 5), (3, 3), 9, "SAME"),            # C <= O: im2col.
    ((2, 6, 5, 9), (3, 3), 4, "SAME"),            # C > O: per-tap products, shifted.
    pytest.param((2, 7, 6, 6), (3, 5), 6, "VALID", marks=SLOW),
    pytest.param((1, 5, 6, 8), (3, 3), 3, ((2, 0), (1, 3)), marks=SLOW),
])
def test_patches_conv_matches_direct_forward_and_gradients(shape, kernel_hw, out_channels,
                                                           padding):
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, shape[-1], out_channels)) * 0.1
  pads = conv_lib.explicit_pads(shape[1:3], kernel_hw, padding)
  assert_conv_matches_direct(lambda x, k: patches.patches_conv(x, k, pads), x, kernel, padding)


@pytest.mark.parametrize("shape,out_channels,padding", [
    ((3, 6, 6, 5), 9, "SAME"),                    # F(3 x 3): 2 x 2 tiles, none cut.
    pytest.param((2, 7, 5, 9), 4, "SAME", marks=SLOW),            # F(4 x 4), cut tiles.
    pytest.param((2, 4, 4, 6), 5, "VALID", marks=SLOW),           # F(2 x 2), one tile.
    pytest.param((1, 9, 6, 8), 3, ((2, 0), (1, 2)), marks=SLOW),  # Uneven padding.
])
def test_winograd_conv_matches_direct_forward_and_gradients(shape, out_channels, padding):
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (3, 3, shape[-1], out_channels)) * 0.1
  pads = conv_lib.explicit_pads(shape[1:3], (3, 3), padding)
  assert_conv_matches_direct(lambda x, k: winograd.winograd_conv(x, k, pads), x, kernel, padding)


@pytest.mark.parametrize("m", winograd.TILES)
def test_winograd_transforms_compute_the_correlation(m):
  """``A^T [(G g) * (B^T d)]`` is the 3-tap correlation of ``m + 2`` inputs, in float64."""
  at, g_matrix, bt = (np.array(a) for a in winograd.matrices(m))
  rng = np.random.default_rng(m)
  d, g = rng.normal(size=m + 2), rng.normal(size=3)
  np.testing.assert_allclose(at @ ((g_matrix @ g) * (bt @ d)), np.correlate(d, g, "valid"),
                             rtol=0, atol=1e-12)


def test_winograd_tiles_cover_the_map_with_fewest_products():
  assert winograd.tile_size((6, 6)) == 3        # 4 tiles of 25 against 9 of 16 or 4 of 36.
  assert winograd.tile_size((2, 2)) == 2
  for out_hw in ((4, 4), (7, 7), (13, 13), (224, 224), (7, 5)):
    assert winograd.tile_size(out_hw) == 4


def test_winograd_round_off_on_a_wide_layer_stays_near_the_direct_forms():
  """Against a float64 reference, on 6 x 6 maps at 256 input channels (the CAE's width, where
  round-off grows with the sums): within 4x the direct convolution's float32 error, and
  below 1e-5 of the largest output."""
  x = np.random.default_rng(0).uniform(size=(2, 6, 6, 256))
  kernel = np.random.default_rng(1).normal(size=(3, 3, 256, 32)) / 48
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  exact = sum(np.einsum("bhwc,co->bhwo", padded[:, i:i + 6, j:j + 6], kernel[i, j])
              for i in range(3) for j in range(3))
  x32, k32 = jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)
  error = lambda y: np.abs(np.asarray(y, np.float64) - exact).max() / np.abs(exact).max()
  ours = error(jax.jit(lambda x, k: winograd.winograd_conv(x, k, ((1, 1), (1, 1))))(x32, k32))
  theirs = error(jax.jit(lambda x, k: direct(x, k, padding="SAME"))(x32, k32))
  assert ours < 1e-5 and ours < 4 * max(theirs, 1e-7)


@pytest.mark.slow
def test_winograd_transforms_are_the_same_over_batch_chunks(monkeypatch):
  """Chunked products (two images per chunk) with chunked tile transforms inside (one image
  per chunk) give the one-chunk result, value and gradients, up to the float32 round-off of
  XLA fusing them differently."""
  x, kernel = numpy_normal(0, (4, 6, 6, 3)), numpy_normal(1, (3, 3, 3, 5)) * 0.1
  cotangent = numpy_normal(2, (4, 6, 6, 5))
  pads = ((1, 1), (1, 1))

  def value_and_grads():  # A new function per call: traced with the chunk sizes set now.
    def run(x, kernel, cotangent):
      y, pullback = jax.vjp(lambda x, k: winograd.winograd_conv(x, k, pads), x, kernel)
      return y, *pullback(cotangent)
    return jax.jit(run)(x, kernel, cotangent)
  whole = value_and_grads()
  monkeypatch.setattr(winograd, "TRANSFORM_CHUNK_FLOATS", 6 * 6 * 5)
  monkeypatch.setattr(winograd, "PRODUCT_CHUNK_TILES", 8)
  for a, b in zip(value_and_grads(), whole):
    close(a, b)


@pytest.mark.parametrize("shape,kernel_hw,out_channels,padding", [
    ((3, 9, 8, 1), (3, 3), 20, "SAME"),
    ((2, 7, 9, 1), (1, 3), 4, "VALID"),
    pytest.param((2, 8, 7, 1), (3, 2), 5, ((2, 0), (1, 3)), marks=SLOW),
])
def test_single_channel_conv_matches_direct_forward_and_gradients(shape, kernel_hw,
                                                                  out_channels, padding):
  x = numpy_normal(0, shape)
  kernel = numpy_normal(1, (*kernel_hw, 1, out_channels)) * 0.1
  pads = conv_lib.explicit_pads(shape[1:3], kernel_hw, padding)
  assert_conv_matches_direct(lambda x, k: taps.single_channel_conv(x, k, pads), x, kernel,
                             padding)


@pytest.mark.parametrize("chunk_floats", [1, 2 ** 20], ids=["one-image-chunks", "one-chunk"])
def test_patches_kernel_gradient_is_the_same_over_batch_chunks(chunk_floats):
  """``patches^T @ g`` summed over chunks of the batch equals XLA's kernel gradient."""
  x, g = numpy_normal(0, (6, 9, 8, 2)), numpy_normal(1, (6, 9, 8, 5))
  pads = ((1, 1), (1, 1))
  ours = patches.patches_kernel_grad(x, g, (3, 3), pads, chunk_floats)
  expected, = jax.linear_transpose(lambda k: direct(x, k, (1, 1), pads),
                                   jax.ShapeDtypeStruct((3, 3, 2, 5), jnp.float32))(g)
  close(ours, expected)


def assert_close_in_bfloat16(actual, expected):
  """bfloat16 inputs and outputs (8-bit significands) against float32 on the same rounded
  inputs: relative to the largest value, a few output roundings."""
  assert actual.dtype == jnp.bfloat16
  expected = np.asarray(expected, np.float32)
  np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=2 ** -6,
                             atol=2 ** -7 * np.abs(expected).max())


@pytest.mark.parametrize("shape,kernel_hw,out_channels,groups,strides", [
    ((2, 6, 6, 128), (3, 3), 160, 1, (1, 1)),     # patches, im2col.
    pytest.param((2, 5, 6, 160), (3, 3), 128, 1, (1, 1), marks=SLOW),  # patches, shifted taps.
    pytest.param((2, 9, 9, 6), (3, 3), 6, 1, (1, 1), marks=SLOW),  # tap_grad, run in float32.
    pytest.param((2, 9, 8, 20), (3, 3), 6, 1, (1, 1), marks=SLOW),  # padded_channels (AVX2).
    pytest.param((2, 9, 9, 1), (3, 3), 6, 1, (1, 1), marks=SLOW),  # single_channel, float32 sums.
    pytest.param((2, 12, 12, 3), (9, 9), 4, 1, (1, 1), marks=SLOW),  # fft, run in float32.
    pytest.param((2, 9, 9, 5), (1, 1), 7, 1, (1, 1), marks=SLOW),  # pointwise, bf16 products.
    ((2, 9, 10, 6), (3, 3), 6, 6, (2, 2)),        # depthwise, float32 accumulation.
], ids=["patches-im2col", "patches-taps", "tap-grad", "padded-channels", "single-channel",
        "fft", "pointwise", "depthwise"])
def test_bfloat16_conv_matches_float32_on_the_same_values(shape, kernel_hw, out_channels,
                                                         groups, strides, monkeypatch):
  """Every algorithm takes bfloat16 and returns bfloat16 values and gradients, equal to the
  float32 convolution of the same (rounded) values up to bfloat16 output rounding."""
  # tap_grad for 6 channels, padded_channels for 20, on any host.
  monkeypatch.setattr(isa, "vector_floats", lambda: 16 if shape[-1] < 20 else 8)
  x = numpy_normal(0, shape).astype(jnp.bfloat16)
  kernel = (numpy_normal(1, (*kernel_hw, shape[-1] // groups, out_channels)) * 0.1).astype(
      jnp.bfloat16)
  ours = jax.jit(lambda x, k: kernels.conv(x, k, strides, "SAME", feature_group_count=groups))
  reference = jax.jit(lambda x, k: direct(x, k, strides, "SAME", feature_group_count=groups))
  wide = (x.astype(jnp.float32), kernel.astype(jnp.float32))
  expected = reference(*wide)
  assert_close_in_bfloat16(ours(x, kernel), expected)
  cotangent = numpy_normal(2, expected.shape)
  for a, b in zip(jax.vjp(ours, x, kernel)[1](cotangent.astype(jnp.bfloat16)),
                  jax.vjp(reference, *wide)[1](cotangent)):
    assert_close_in_bfloat16(a, b)


def test_bias_gradient_is_summed_in_float32():
  """A bfloat16 running sum of ones stalls at 256; the bias gradient must count all 9,216
  (a number bfloat16 holds exactly)."""
  y, bias = jnp.zeros((96, 96, 3), jnp.bfloat16), jnp.zeros((3,), jnp.bfloat16)
  grad = jax.grad(lambda b: jnp.sum(conv_lib.add_bias(y, b).astype(jnp.float32)))(bias)
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(grad, np.float32), [96 * 96] * 3)
  g = numpy_normal(1, (4, 5, 3))
  np.testing.assert_allclose(jax.grad(lambda b: jnp.sum(conv_lib.add_bias(g * 0, b) * g))(
      jnp.zeros(3)), g.sum((0, 1)), rtol=1e-6)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 0), (2, 1))])
def test_pointwise_conv_matches_direct_forward_and_gradients(padding):
  x, kernel = numpy_normal(0, (2, 7, 6, 5)), numpy_normal(1, (1, 1, 5, 9))
  assert kernels.conv_algorithm(kernel.shape, (1, 1)) == "pointwise"
  assert_conv_matches_direct(lambda x, k: kernels.conv(x, k, padding=padding), x, kernel, padding)


def test_vector_floats_reads_the_widest_vector_unit():
  assert isa.vector_floats(frozenset({"sse4_2", "avx", "avx2", "fma", "avx512f"})) == 16
  assert isa.vector_floats(frozenset({"sse4_2", "avx", "avx2", "fma"})) == 8
  assert isa.vector_floats(frozenset({"sse4_2", "avx"})) == 4
  assert isa.vector_floats(isa.parse_flags("Features\t: fp asimd evtstrm crc32\n")) == 4


def test_selector_picks_fft_tap_grad_or_direct():
  assert kernels.conv_algorithm((3, 3, 1, 32), (2, 2), feature_group_count=32) == "depthwise"
  assert kernels.conv_algorithm((5, 5, 1, 672), (1, 1), feature_group_count=672) == "depthwise"
  # Grouped but not depthwise (AlexNet's two towers): one convolution per group, up to a cap.
  assert kernels.conv_algorithm((3, 3, 192, 384), (1, 1), feature_group_count=2) == "split_groups"
  assert kernels.conv_algorithm((5, 5, 48, 256), (2, 2), feature_group_count=2) == "split_groups"
  assert kernels.conv_algorithm((3, 3, 4, 128), (1, 1), feature_group_count=32) == "direct"
  assert kernels.conv_algorithm((3, 3, 192, 384), (1, 1), feature_group_count=2,
                                kernels=kernels.REFERENCE) == "direct"
  assert kernels.conv_algorithm((1, 1, 96, 24), (1, 1)) == "pointwise"
  assert kernels.conv_algorithm((1, 1, 96, 24), (2, 2)) == "direct"
  assert kernels.conv_algorithm((15, 15, 1, 20), (1, 1)) == "direct"  # One input channel.
  assert kernels.conv_algorithm((15, 15, 2, 20), (1, 1)) == "fft"
  assert kernels.conv_algorithm((9, 9, 20, 50), (1, 1)) == "fft"
  # Few channels: the per-row kernel gradient with AVX-512; with AVX2 XLA's own, on input
  # channels zero-padded to a multiple of 8 from 20 channels on; elsewhere XLA's own.
  for shape in ((3, 3, 20, 20), (5, 5, 2, 20), (3, 3, 96, 128), (5, 5, 44, 20)):
    assert kernels.conv_algorithm(shape, (1, 1), vector_floats=16) == "tap_grad"
    assert kernels.conv_algorithm(shape, (1, 1), vector_floats=8) == (
        "padded_channels" if shape[2] in (20, 44) else "direct")
    assert kernels.conv_algorithm(shape, (1, 1), vector_floats=4) == "direct"
  for too_few_or_aligned in ((3, 3, 12, 20), (3, 3, 24, 20)):
    assert kernels.conv_algorithm(too_few_or_aligned, (1, 1), vector_floats=8) == "direct"
  assert kernels.conv_algorithm((3, 3, 20, 20), (2, 2), vector_floats=8) == "direct"
  # One input channel, at most 9 taps: a sum of views on any CPU.
  for lanes in (16, 8, 4):
    assert kernels.conv_algorithm((3, 3, 1, 20), (1, 1), vector_floats=lanes) == "single_channel"
  assert kernels.conv_algorithm((5, 5, 1, 20), (1, 1), vector_floats=8) == "direct"
  assert kernels.conv_algorithm((1, 3, 1, 20), (1, 1)) == "single_channel"
  assert kernels.conv_algorithm((3, 3, 1, 20), (2, 2)) == "direct"
  assert kernels.conv_algorithm((3, 3, 256, 4096), (1, 1)) == "direct"
  assert kernels.conv_algorithm((3, 3, 4096, 256), (1, 1)) == "direct"
  # Wide layers on small maps (the CAE's 6 x 6 conv5 maps): Winograd for 3 x 3 kernels in
  # float32; one product over patches for other kernels and in bfloat16.
  for shape, x_hw in (((3, 3, 256, 4096), (6, 6)), ((3, 3, 4096, 256), (6, 6)),
                      ((3, 3, 1280, 128), (7, 7))):
    assert kernels.conv_algorithm(shape, (1, 1), x_hw=x_hw) == "winograd"
    assert kernels.conv_algorithm(shape, (1, 1), x_hw=x_hw, narrow=True) == "patches"
  assert kernels.conv_algorithm((5, 5, 256, 4096), (1, 1), x_hw=(6, 6)) == "patches"
  assert kernels.conv_algorithm((3, 5, 256, 4096), (1, 1), x_hw=(6, 6)) == "patches"
  assert kernels.conv_algorithm((3, 3, 256, 4096), (1, 1), x_hw=(13, 13)) == "direct"
  assert kernels.conv_algorithm((3, 3, 120, 4096), (1, 1), x_hw=(6, 6),
                                vector_floats=16) == "tap_grad"
  assert kernels.conv_algorithm((3, 3, 256, 384), (2, 2), x_hw=(6, 6)) == "direct"
  assert kernels.conv_algorithm((3, 3, 127, 4096), (1, 1), vector_floats=16) == "tap_grad"
  assert kernels.conv_algorithm((3, 3, 128, 128), (1, 1)) == "direct"
  assert kernels.conv_algorithm((11, 11, 3, 96), (4, 4)) == "direct"  # Strided: direct.
  assert kernels.conv_algorithm((3, 3, 256, 384), (2, 2)) == "direct"
  assert kernels.conv_algorithm((15, 15, 3, 1), (1, 1)) == "fft"
  assert kernels.conv_algorithm((3, 3, 3, 1), (1, 1)) != "fft"
  # Strided large kernels go the direct way and still give the direct result.
  x, kernel = numpy_normal(3, (1, 31, 29, 2)), numpy_normal(4, (11, 11, 2, 4))
  np.testing.assert_array_equal(kernels.conv(x, kernel, (4, 4), "VALID"),
                                direct(x, kernel, (4, 4), "VALID"))


@pytest.mark.parametrize("kernel_hw,strides,groups,channels", [
    pytest.param((9, 9), 1, 1, 3, marks=SLOW), pytest.param((3, 3), 1, 1, 3, marks=SLOW),
    pytest.param((1, 1), 1, 1, 3, marks=SLOW), ((3, 3), 2, 3, 3),
    pytest.param((3, 3), 1, 2, 4, marks=SLOW)],
    ids=["fft", "tap-grad", "pointwise", "depthwise", "split-groups"])
def test_conv_module_is_a_drop_in_for_nn_conv(kernel_hw, strides, groups, channels):
  x = numpy_normal(5, (2, 21, 21, channels))
  features = 3 if groups == channels else 4
  ours = kernels.Conv(features, kernel_hw, strides, padding="SAME", feature_group_count=groups)
  theirs = nn.Conv(features, kernel_hw, strides, padding="SAME", feature_group_count=groups)
  variables = theirs.init(jax.random.PRNGKey(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == jax.tree.map(
      jnp.shape, variables)
  close(jax.jit(ours.apply)(variables, x), jax.jit(theirs.apply)(variables, x))
  loss = lambda module: lambda v: jnp.sum(jnp.sin(module.apply(v, x)))
  jax.tree.map(close, jax.jit(jax.grad(loss(ours)))(variables),
               jax.jit(jax.grad(loss(theirs)))(variables))


def assert_fast_path_matches_reference_path(model, x, **apply_kwargs):
  variables = kernels.jit(model.init, once=True)(jax.random.PRNGKey(1), x)

  def loss(model):
    def value(params):
      logits, features = model.apply({"params": params}, x, **apply_kwargs)
      return jnp.sum(logits) + jnp.sum(features["pre_logits"])
    return value

  reference = model.clone(kernels=kernels.REFERENCE)
  fast = jax.jit(jax.value_and_grad(loss(model)))(variables["params"])
  slow = jax.jit(jax.value_and_grad(loss(reference)))(variables["params"])
  close(fast[0], slow[0])
  jax.tree.map(close, fast[1], slow[1])


@pytest.mark.slow
def test_lenet_fast_path_matches_reference_path():
  # 9x9 kernels: 81 taps, on the FFT side of the threshold (the second layer; the first,
  # with one input channel, is direct).
  assert_fast_path_matches_reference_path(LeNet(kernel_size=9), numpy_normal(8, (2, 36, 36, 1)))


@pytest.mark.slow
@pytest.mark.parametrize("variant,lanes", [("C", 16), ("E", 16), ("C", 8), ("E", 8)])
def test_irma_fast_path_matches_reference_path(variant, lanes, monkeypatch):
  # Variant C's 3x3 and E's 5x5 convolutions take the tap-gradient route with AVX-512 and
  # padded input channels with AVX2; 37 x 37 leaves odd rows and columns to every pool.
  monkeypatch.setattr(isa, "vector_floats", lambda: lanes)
  model = IrmaCNN(num_classes=3, variant=variant, fc_units=(16, 8), use_dropout=False)
  assert_fast_path_matches_reference_path(model, numpy_normal(9, (3, 37, 37, 1)))


@pytest.mark.slow
def test_efficientnet_fast_path_matches_reference_path():
  # Depthwise 3x3/5x5 at strides 1 and 2 and every 1x1 conv, with batch statistics as at
  # extraction time; 67 x 67 gives odd maps to the stride-2 "SAME" pads.
  model = EfficientNetLite0(num_classes=5)
  x = numpy_normal(10, (2, 67, 67, 3))
  variables = random_variables(model, x, seed=2)
  fast = jax.jit(model.apply)(variables, x)[1]
  slow = jax.jit(model.clone(kernels=kernels.REFERENCE).apply)(variables, x)[1]
  for name in ("stage3", "stage6", "head", "pre_logits"):
    close(fast[name], slow[name])
