"""oneDNN's convolutions (``medjax/kernels/onednn.py``): the same function as
``lax.conv_general_dilated`` in value and both gradients, in float32 and bfloat16, for every
padding form, stride and grouping; the routes they take over; run after run the same bits,
with XLA running several at once; and, where they cannot be built or have no bfloat16
kernels, a reason and XLA's forms."""
import contextlib
import functools
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import kernels
from medjax.kernels import convolution as conv_lib
from medjax.kernels import onednn, winograd
from tests.compare import numpy_normal


@pytest.fixture
def built():
  if not onednn.available():
    pytest.skip(f"oneDNN's convolutions are not built here: {onednn.unavailable_reason()}")


def reference(x, kernel, strides, padding, groups=1):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=groups)


def value_and_grads(conv, x, kernel, cotangent):
  y, vjp = jax.vjp(conv, x, kernel)
  return (y, *vjp(cotangent))


def close(actual, expected, rtol=1e-4, atol_scale=2e-5):
  expected = np.asarray(expected, np.float32)
  np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=rtol,
                             atol=atol_scale * np.abs(expected).max())


CASES = [  # input shape, kernel shape, strides, padding, groups
    ((2, 13, 11, 3), (3, 3, 3, 5), (1, 1), "SAME", 1),
    ((2, 13, 11, 20), (3, 3, 20, 20), (1, 1), "VALID", 1),
    ((1, 12, 17, 4), (3, 2, 4, 6), (2, 3), ((2, 0), (1, 3)), 1),
    ((2, 16, 16, 1), (3, 3, 1, 8), (1, 1), "SAME", 1),
    ((1, 24, 24, 1), (15, 15, 1, 4), (1, 1), "VALID", 1),
    ((1, 31, 29, 3), (11, 11, 3, 8), (4, 4), "VALID", 1),
    ((2, 9, 9, 8), (5, 5, 8, 16), (2, 2), 2, 1),
    ((2, 13, 11, 16), (3, 3, 1, 16), (1, 1), "SAME", 16),  # Depthwise (EfficientNet's).
    ((2, 14, 14, 6), (5, 5, 1, 12), (2, 2), "SAME", 6),  # Depthwise, two outputs each.
    ((1, 10, 9, 8), (3, 2, 4, 6), (1, 2), ((0, 2), (1, 0)), 2),  # Grouped.
]


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,groups", CASES)
def test_conv_is_the_reference_convolution(built, x_shape, k_shape, strides, padding, groups):
  x, kernel = numpy_normal(0, x_shape), numpy_normal(1, k_shape) * 0.1
  pads = conv_lib.explicit_pads(x_shape[1:3], k_shape[:2], padding, strides)
  fast = jax.jit(lambda x, k: onednn.conv(x, k, strides, pads, groups))
  slow = jax.jit(lambda x, k: reference(x, k, strides, pads, groups))
  cotangent = numpy_normal(2, jax.eval_shape(slow, x, kernel).shape)
  ours = value_and_grads(fast, x, kernel, cotangent)
  theirs = value_and_grads(slow, x, kernel, cotangent)
  for a, b in zip(ours, theirs):
    assert a.shape == b.shape and a.dtype == b.dtype == jnp.float32
    close(a, b)


@pytest.mark.parametrize("x_shape,k_shape,strides,padding,groups", CASES[:3] + CASES[-3:])
def test_bfloat16_conv_accumulates_in_float32(built, x_shape, k_shape, strides, padding,
                                              groups):
  """bfloat16 operands, float32 sums: within a bfloat16 rounding of the float32 convolution
  of the same (bfloat16-representable) values; the kernel gradient is summed in float32."""
  x = numpy_normal(0, x_shape).astype(jnp.bfloat16)
  kernel = (numpy_normal(1, k_shape) * 0.1).astype(jnp.bfloat16)
  pads = conv_lib.explicit_pads(x_shape[1:3], k_shape[:2], padding, strides)
  slow = jax.jit(lambda x, k: reference(x, k, strides, pads, groups))
  cotangent = numpy_normal(2, jax.eval_shape(slow, x, kernel).shape).astype(jnp.bfloat16)
  ours = value_and_grads(jax.jit(lambda x, k: onednn.conv(x, k, strides, pads, groups)), x,
                         kernel, cotangent)
  theirs = value_and_grads(slow, *[a.astype(jnp.float32) for a in (x, kernel, cotangent)])
  for a, b in zip(ours, theirs):
    assert a.dtype == jnp.bfloat16
    close(a, b, rtol=1e-2, atol_scale=1e-2)


def layer_reference(x, kernel, bias, strides, pads, groups, relu):
  y = reference(x, kernel, strides, pads, groups) + bias
  return jax.nn.relu(y) if relu else y


def layer_vjp(layer, x, kernel, bias, cotangent):
  y, vjp = jax.vjp(layer, x, kernel, bias)
  return (y, *vjp(cotangent))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("x_shape,k_shape,strides,padding,groups",
                         [CASES[0], CASES[2], CASES[6], CASES[9]])
def test_conv_with_bias_and_relu_is_the_reference_layer(built, x_shape, k_shape, strides,
                                                         padding, groups, relu):
  """``conv_bias`` adds the bias (and applies ReLU) on oneDNN's output pass and takes the
  bias's gradient with the kernel's: value and all three gradients are the reference
  convolution + bias (+ ReLU)'s, with about half the outputs below 0."""
  x, kernel = numpy_normal(0, x_shape), numpy_normal(1, k_shape) * 0.1
  bias = numpy_normal(3, k_shape[3:]) * 0.1
  pads = conv_lib.explicit_pads(x_shape[1:3], k_shape[:2], padding, strides)
  fast = jax.jit(lambda *a: onednn.conv_bias(*a, strides, pads, groups, relu))
  slow = jax.jit(lambda *a: layer_reference(*a, strides, pads, groups, relu))
  cotangent = numpy_normal(2, jax.eval_shape(slow, x, kernel, bias).shape)
  ours = layer_vjp(fast, x, kernel, bias, cotangent)
  theirs = layer_vjp(slow, x, kernel, bias, cotangent)
  assert 0.3 < float(jnp.mean(ours[0] == 0)) < 0.7 if relu else not jnp.any(ours[0] == 0)
  for a, b in zip(ours, theirs):
    assert a.shape == b.shape and a.dtype == b.dtype == jnp.float32
    close(a, b)


def test_bfloat16_conv_with_bias_and_relu_sums_in_float32(built):
  """bfloat16 operands: the bias is added to the float32 sums before the one rounding, so
  the value is within a bfloat16 rounding of the float32 layer; the gradients are the
  float32 ones through the mask the output itself gives (pre-activations within a rounding
  of 0 may fall either side), the bias's and kernel's summed in float32."""
  x = numpy_normal(0, (2, 13, 11, 20)).astype(jnp.bfloat16)
  kernel = (numpy_normal(1, (3, 3, 20, 20)) * 0.1).astype(jnp.bfloat16)
  bias, pads = numpy_normal(3, (20,)) * 0.1, ((1, 1), (1, 1))
  cotangent = numpy_normal(2, (2, 13, 11, 20)).astype(jnp.bfloat16)
  ours = layer_vjp(jax.jit(lambda *a: onednn.conv_bias(*a, (1, 1), pads, 1, True)), x,
                   kernel, bias, cotangent)
  mask = (ours[0] > 0).astype(jnp.float32)
  wide = [a.astype(jnp.float32) for a in (x, kernel)]
  theirs = layer_vjp(lambda *a: layer_reference(*a, (1, 1), pads, 1, False), *wide, bias,
                     cotangent.astype(jnp.float32) * mask)
  close(ours[0], jax.nn.relu(theirs[0]), rtol=1e-2, atol_scale=1e-2)
  assert [a.dtype for a in ours] == [jnp.bfloat16] * 3 + [jnp.float32]
  for a, b in zip(ours[1:], theirs[1:]):
    close(a, b, rtol=1e-2, atol_scale=1e-2)


@pytest.mark.parametrize("activation", [nn.relu, jnp.tanh, None])
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_layer_with_an_activation_is_flax_conv_then_it(built, activation, use_bias):
  """``Conv(activation=...)`` is ``activation(nn.Conv(...)(x))`` with the same parameters,
  fast or reference ops; ReLU with a bias goes into oneDNN's call, and so does the bias
  before any other activation."""
  x = numpy_normal(0, (2, 12, 10, 8))
  flax_conv = nn.Conv(6, (3, 3), use_bias=use_bias, bias_init=nn.initializers.normal(0.1))
  params = flax_conv.init(jax.random.key(0), x)
  cotangent = numpy_normal(1, (2, 12, 10, 6))
  then = activation or (lambda y: y)
  theirs = jax.jit(jax.grad(lambda p: jnp.sum(then(flax_conv.apply(p, x)) * cotangent)))(params)
  expected = jax.jit(lambda p: then(flax_conv.apply(p, x)))(params)
  for ops in (kernels.XLA_CPU, kernels.REFERENCE):
    ours = kernels.Conv(6, (3, 3), use_bias=use_bias, activation=activation, kernels=ops)
    loss = jax.jit(jax.grad(lambda p: jnp.sum(ours.apply(p, x) * cotangent)))
    value_text = jax.jit(ours.apply).lower(params, x).as_text()
    fused = ops == kernels.XLA_CPU and use_bias
    assert ("forward_bias" in value_text) == fused
    assert ("relu = 1" in value_text) == (fused and activation is nn.relu)
    assert ("kernel_bias_grad" in loss.lower(params).as_text()) == fused
    close(jax.jit(ours.apply)(params, x), expected)
    for a, b in zip(jax.tree.leaves(loss(params)), jax.tree.leaves(theirs)):
      close(a, b)


def test_vmapped_conv_with_bias_is_the_reference_per_member(built):
  """Stacked networks (``nn.vmap``) run the fused layer member by member."""
  x, kernel = numpy_normal(0, (2, 9, 9, 4)), numpy_normal(1, (3, 3, 3, 4, 5)) * 0.1
  bias, pads = numpy_normal(2, (3, 5)) * 0.1, ((1, 1), (1, 1))

  def loss(layer, x, kernel, bias):
    y = jax.vmap(lambda k, b: layer(x, k, b, (1, 1), pads, 1, True))(kernel, bias)
    return jnp.sum(y * numpy_normal(3, y.shape))

  ours = jax.jit(jax.value_and_grad(lambda *a: loss(onednn.conv_bias, *a), (0, 1, 2)))(
      x, kernel, bias)
  theirs = jax.jit(jax.value_and_grad(lambda *a: loss(layer_reference, *a), (0, 1, 2)))(
      x, kernel, bias)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    close(a, b)


def test_routes_it_takes_over_and_those_it_leaves():
  def route(shape, strides=(1, 1), groups=1, narrow=False, built=True, x_hw=None):
    return kernels.conv_algorithm(shape, strides, groups, x_hw=x_hw, narrow=narrow,
                                  vector_floats=16, use_onednn=built)

  assert route((3, 3, 20, 20)) == "onednn"  # IRMA's layers (tap_grad otherwise).
  assert route((3, 3, 20, 20), built=False) == "tap_grad"
  assert route((11, 11, 3, 96), (4, 4)) == "onednn"  # Strided: direct otherwise.
  assert route((3, 3, 128, 128)) == "onednn"
  assert route((15, 15, 1, 20)) == "onednn"
  assert route((15, 15, 20, 50)) == "fft"  # LeNet's second layer: the FFT is faster.
  assert route((3, 3, 192, 384), groups=2) == "split_groups"
  assert route((3, 3, 4, 128), groups=32) == "direct"  # Grouped, not depthwise: unmeasured.
  # EfficientNet's layers: depthwise ones (with some of XLA's gradients, below); 1 x 1 ones in
  # bfloat16 on maps wider than 7 x 7.
  for shape, strides in (((3, 3, 1, 96), (1, 1)), ((5, 5, 1, 96), (2, 2))):
    assert route(shape, strides, 96) == route(shape, strides, 96, narrow=True) == "onednn"
    assert route(shape, strides, 96, built=False) == "depthwise"
  assert route((1, 1, 96, 24), x_hw=(56, 56)) == "pointwise"
  assert route((1, 1, 96, 24), x_hw=(14, 14), narrow=True) == "onednn"
  assert route((1, 1, 96, 24), x_hw=(7, 7), narrow=True) == "pointwise"
  assert route((1, 1, 96, 24), x_hw=(14, 14), narrow=True, built=False) == "pointwise"
  # Faster than XLA's float32 convolution, but not than oneDNN's bfloat16 one.
  assert route((3, 3, 1, 20)) == "single_channel"
  assert route((3, 3, 1, 20), narrow=True) == "onednn"
  # The CAE's layers: Winograd in float32 (not an XLA form oneDNN replaces), oneDNN's
  # bfloat16 kernels for the patches in bfloat16.
  assert route((3, 3, 256, 4096), x_hw=(6, 6)) == "winograd"
  assert route((3, 3, 256, 4096), x_hw=(6, 6), narrow=True) == "onednn"
  assert route((3, 3, 256, 4096), x_hw=(6, 6), narrow=True, built=False) == "patches"
  # VGG's wide layers on 56 x 56 and 28 x 28 maps: Winograd with oneDNN's products, in
  # float32; oneDNN's direct convolution on smaller maps, narrower layers, with a stride and
  # in bfloat16; XLA's direct one without oneDNN.
  assert route((3, 3, 256, 256), x_hw=(56, 56)) == "winograd"
  assert route((3, 3, 512, 512), x_hw=(28, 28)) == "winograd"
  assert route((3, 3, 256, 256), x_hw=(56, 56), built=False) == "direct"
  for shape, x_hw in (((3, 3, 512, 512), (14, 14)), ((3, 3, 128, 256), (56, 56)),
                      ((3, 3, 256, 256), (112, 112)), ((3, 3, 384, 384), (13, 13))):
    assert route(shape, x_hw=x_hw) == "onednn"
  assert route((3, 3, 256, 256), (2, 2), x_hw=(56, 56)) == "onednn"
  assert route((3, 3, 256, 256), x_hw=(56, 56), narrow=True) == "onednn"
  assert route((5, 5, 256, 256), x_hw=(56, 56)) == "onednn"
  assert kernels.conv_algorithm((3, 3, 20, 20), (1, 1), kernels=kernels.REFERENCE,
                                use_onednn=True) == "direct"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True), (True, True)])
def test_batched_matmul_is_the_float32_product(built, dtype, transpose_a, transpose_b):
  """Winograd's and bfloat16 dense layers' products: per leading index, ``a @ b`` with
  either operand transposed in place, summed in float32."""
  a = numpy_normal(0, (3, 7, 5) if transpose_a else (3, 5, 7)).astype(dtype)
  b = numpy_normal(1, (3, 4, 7) if transpose_b else (3, 7, 4)).astype(dtype)
  product = lambda a, b: onednn.batched_matmul(a, b, transpose_a, transpose_b)
  ours = jax.jit(product)(a, b)
  wide_a, wide_b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if transpose_a:
    wide_a = np.swapaxes(wide_a, 1, 2)
  if transpose_b:
    wide_b = np.swapaxes(wide_b, 1, 2)
  expected = wide_a @ wide_b
  assert ours.dtype == jnp.float32 and ours.shape == (3, 5, 4)
  close(ours, expected, rtol=1e-5, atol_scale=1e-6)
  members = jax.jit(jax.vmap(product))(jnp.stack([a, -a]), jnp.stack([b, b]))
  close(members[0], expected, rtol=1e-5, atol_scale=1e-6)
  close(members[1], -expected, rtol=1e-5, atol_scale=1e-6)


# XLA's batched dot (the form without oneDNN) is also test_conv.py's fast Winograd case.
@pytest.mark.parametrize("with_onednn", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_winograd_products_by_either_library_are_the_convolution(built, with_onednn):
  """``winograd_conv``'s products go to oneDNN's matmul where it is usable, else to XLA's
  batched dot; value and both gradients are the reference convolution's either way."""
  x, kernel = numpy_normal(0, (2, 9, 7, 6)), numpy_normal(1, (3, 3, 6, 5)) * 0.1
  pads = ((1, 1), (1, 1))
  cotangent = numpy_normal(2, (2, 9, 7, 5))
  context = contextlib.nullcontext() if with_onednn else onednn.disabled()
  with context:
    fast = jax.jit(lambda x, k: winograd.winograd_conv(x, k, pads))
    text = fast.lower(x, kernel).as_text()
    ours = value_and_grads(fast, x, kernel, cotangent)
  assert ("batched_matmul" in text) == with_onednn
  theirs = value_and_grads(jax.jit(lambda x, k: reference(x, k, (1, 1), pads)), x, kernel,
                           cotangent)
  for a, b in zip(ours, theirs):
    close(a, b)


def test_depthwise_gradients_xla_computes_instead():
  """Per pass, the faster of the two measured on EfficientNet-Lite0's layers."""
  xla_grads = conv_lib.onednn_xla_grads
  assert xla_grads((3, 3, 20, 20), (1, 1)) == xla_grads((3, 3, 4, 8), (1, 1), 4) == ()
  for narrow in (False, True):
    assert xla_grads((3, 3, 1, 96), (1, 1), 96, narrow) == ("input_grad",)
    assert xla_grads((3, 3, 1, 96), (2, 2), 96, narrow) == ("input_grad",)
    assert xla_grads((5, 5, 1, 96), (1, 1), 96, narrow) == ("input_grad", "kernel_grad")
  assert xla_grads((5, 5, 1, 96), (2, 2), 96) == ("kernel_grad",)
  assert xla_grads((5, 5, 1, 96), (2, 2), 96, True) == ("input_grad", "kernel_grad")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("xla_grads", [(), ("input_grad",), ("kernel_grad",),
                                       ("input_grad", "kernel_grad")])
def test_gradients_taken_from_xla_are_the_reference_too(built, xla_grads, dtype):
  x_shape, k_shape, strides, padding, groups = CASES[-2]
  x = numpy_normal(0, x_shape).astype(dtype)
  kernel = (numpy_normal(1, k_shape) * 0.1).astype(dtype)
  pads = conv_lib.explicit_pads(x_shape[1:3], k_shape[:2], padding, strides)
  slow = lambda x, k: reference(x, k, strides, pads, groups)
  cotangent = numpy_normal(2, jax.eval_shape(slow, x, kernel).shape).astype(dtype)
  ours = value_and_grads(jax.jit(
      lambda x, k: onednn.conv(x, k, strides, pads, groups, slow, xla_grads)), x, kernel,
                         cotangent)
  theirs = value_and_grads(jax.jit(slow), *[a.astype(jnp.float32) for a in (x, kernel,
                                                                            cotangent)])
  for a, b in zip(ours, theirs):
    assert a.dtype == dtype
    close(a, b, *((1e-4, 2e-5) if dtype == jnp.float32 else (1e-2, 1e-2)))


def test_several_devices_or_an_export_keep_the_xla_forms(monkeypatch):
  """The custom call has no sharding rule (a sharded program would gather the batch), and a
  SavedModel cannot carry it."""
  monkeypatch.setattr(onednn, "available", lambda: True)
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  assert kernels.conv_algorithm((3, 3, 20, 20), (1, 1), vector_floats=16) == "tap_grad"
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert kernels.conv_algorithm((3, 3, 20, 20), (1, 1), vector_floats=16) == "onednn"
  with onednn.disabled():  # What export traces in.
    assert kernels.conv_algorithm((3, 3, 20, 20), (1, 1), vector_floats=16) == "tap_grad"
  assert kernels.conv_algorithm((3, 3, 20, 20), (1, 1), vector_floats=16) == "onednn"


def test_concurrent_convolutions_give_the_same_bits_every_time(built):
  """The input and kernel gradients are independent, so XLA may run them at once on two
  threads (each with its own scratch memory); every run must give the same bits."""
  x, kernel = numpy_normal(0, (16, 32, 32, 20)), numpy_normal(1, (3, 3, 20, 20)) * 0.1
  pads = ((1, 1), (1, 1))
  cotangent = numpy_normal(2, (16, 32, 32, 20))
  step = jax.jit(lambda x, k, g: value_and_grads(
      lambda x, k: onednn.conv(jnp.tanh(onednn.conv(x, k, (1, 1), pads)), k, (1, 1), pads),
      x, k, g))
  first = [np.asarray(a) for a in step(x, kernel, cotangent)]
  for _ in range(4):
    for a, b in zip(step(x, kernel, cotangent), first):
      np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.slow  # Runs g++ on the source: about 7 s.
def test_builds_into_the_cache_once(built, tmp_path, monkeypatch):
  monkeypatch.setenv("MEDJAX_CACHE_DIR", str(tmp_path))
  library = onednn._build()
  assert library.parent == tmp_path / "onednn" and library.stat().st_size > 0
  mtime = library.stat().st_mtime_ns
  assert onednn._build() == library and library.stat().st_mtime_ns == mtime
  assert [p.name for p in library.parent.iterdir()] == [library.name]  # No leftovers.


def test_what_stops_the_build_is_named(monkeypatch, tmp_path):
  monkeypatch.setenv("MEDJAX_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("MEDJAX_ONEDNN", "0")
  with pytest.raises(RuntimeError, match="MEDJAX_ONEDNN=0"):
    onednn._build()
  monkeypatch.delenv("MEDJAX_ONEDNN")
  monkeypatch.setattr(onednn, "_package_file", lambda *_: None)
  with pytest.raises(RuntimeError, match="onednn-cpu-gomp"):
    onednn._build()


def test_an_unbuilt_custom_call_says_why_and_falls_back(monkeypatch, caplog):
  def fail():
    raise RuntimeError("no C++ compiler (g++ or $CXX) to build the custom call")

  monkeypatch.setattr(onednn, "_build", fail)
  assert onednn._load.__wrapped__() == (
      False, "no C++ compiler (g++ or $CXX) to build the custom call", 0)
  assert "XLA's are used instead" in caplog.text


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("batched", ["x", "kernel", "both"])
def test_vmapped_conv_is_the_reference_per_member(built, batched, groups):
  """``nn.vmap`` (LeNet's four networks) batches the images, the kernels or both; one
  folded convolution, or one per member, must equal the reference member by member."""
  members, strides, pads, channels = 3, (2, 1), ((1, 0), (2, 1)), 2 * groups
  x_shape, k_shape = (2, 11, 9, channels), (3, 3, channels // groups, 4)
  x = numpy_normal(0, (members, *x_shape) if batched != "kernel" else x_shape)
  kernel = numpy_normal(1, (members, *k_shape) if batched != "x" else k_shape) * 0.1
  axes = {"x": (0, None), "kernel": (None, 0), "both": (0, 0)}[batched]

  def loss(conv, x, kernel):
    y = jax.vmap(lambda x, k: jnp.sin(conv(x, k, strides, pads, groups)), in_axes=axes)(
        x, kernel)
    return jnp.sum(y * numpy_normal(2, y.shape))

  ours = jax.jit(jax.value_and_grad(lambda x, k: loss(onednn.conv, x, k), (0, 1)))(x, kernel)
  theirs = jax.jit(jax.value_and_grad(lambda x, k: loss(reference, x, k), (0, 1)))(x, kernel)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert a.shape == b.shape
    close(a, b)


def test_float64_keeps_the_xla_forms(built):
  """The handlers take float32 and bfloat16; a float64 check (as the weight importers'
  tests run) must not reach them."""
  with jax.enable_x64(True):
    x = np.random.default_rng(0).normal(size=(1, 9, 9, 3))
    kernel = np.random.default_rng(1).normal(size=(3, 3, 3, 4))
    y = jax.jit(lambda x, k: kernels.conv(x, k, (2, 2), "VALID"))(x, kernel)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, reference(x, kernel, (2, 2), "VALID"), rtol=1e-12)


@pytest.mark.parametrize("cpu_isa,bfloat16", [
    (0x7, False), (0x27, False), (0x67, False), (0xE7, True), (0x1EF, True), (0xFEF, True)])
def test_bfloat16_goes_to_onednn_only_where_it_has_bfloat16_kernels(monkeypatch, cpu_isa,
                                                                   bfloat16):
  """oneDNN's ISA levels AVX2, AVX-512, +VNNI (none: no bfloat16 convolution, or a slow
  emulated one), +BF16, +FP16, AMX (bfloat16 kernels). Elsewhere bfloat16 convolutions keep
  XLA's forms, which compute in float32 and take oneDNN's float32 route from there."""
  monkeypatch.setattr(onednn, "_load", functools.cache(lambda: (True, "", cpu_isa)))
  monkeypatch.setattr(onednn, "usable", lambda: True)
  assert onednn.bfloat16_kernels() == bfloat16
  route = lambda narrow: kernels.conv_algorithm((3, 3, 20, 20), (1, 1), vector_floats=16,
                                                narrow=narrow)
  assert route(False) == "onednn"
  assert route(True) == ("onednn" if bfloat16 else "tap_grad")
  assert onednn.state() == "loaded" + ("" if bfloat16 else " (no bfloat16 kernels on this CPU)")


@pytest.mark.slow
def test_bfloat16_training_runs_where_onednn_has_only_avx2(built):
  """oneDNN has no bfloat16 convolution at all below AVX512-BF16 / AMX: with its ISA capped
  at AVX2 (``ONEDNN_MAX_CPU_ISA``, as on an AVX2-only CPU), a bfloat16 gradient through
  ``kernels.conv`` must still run (it failed with "could not create a primitive
  descriptor" before the route checked) and match float32."""
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np
      from medjax import kernels
      from medjax.kernels import onednn
      assert onednn.available() and not onednn.bfloat16_kernels(), onednn.state()
      rng = np.random.default_rng(0)
      x = jnp.asarray(rng.normal(size=(2, 12, 12, 20)), jnp.bfloat16)
      for shape, groups, strides in (((3, 3, 20, 20), 1, 1), ((3, 3, 1, 20), 20, 2)):
        k = jnp.asarray(rng.normal(size=shape) * 0.1, jnp.bfloat16)
        loss = lambda x, k: jnp.sum(kernels.conv(x, k, strides, "SAME", groups)
                                    .astype(jnp.float32) ** 2)
        ours = jax.jit(jax.grad(loss, (0, 1)))(x, k)
        wide = jax.grad(loss, (0, 1))(x.astype(jnp.float32), k.astype(jnp.float32))
        for a, b in zip(ours, wide):
          np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=0.05,
                                     atol=0.05 * float(jnp.abs(b).max()))
      print("ok", onednn.state())
      """)
  env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ok loaded (no bfloat16 kernels on this CPU)" in result.stdout
