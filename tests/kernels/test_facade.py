"""The façade's switch: every op with ``kernels="xla_cpu"`` computes what it computes with
``kernels="reference"`` (the plain lax/Flax op), in value and gradient; the choice is
explicit (resolved when a model is built) and leaves parameter trees unchanged."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax import kernels
from medjax.kernels import isa, onednn
from medjax.models import registry
from medjax.models.alexnet import AlexNet
from medjax.models.googlenet import GoogLeNet
from medjax.models.squeezenet import SqueezeNet11
from medjax.models.vgg import VGG19
from tests.compare import numpy_normal, random_variables


def close(actual, expected):
  expected = np.asarray(expected)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * np.abs(expected).max())


def assert_same_function(op, *args):
  """``op(*args, kernels=...)`` agrees between the two choices in value and every gradient."""
  fast = jax.jit(lambda *a: op(*a, kernels=kernels.XLA_CPU))  # Jitted: one compilation.
  reference = jax.jit(lambda *a: op(*a, kernels=kernels.REFERENCE))
  y_fast, vjp_fast = jax.vjp(fast, *args)
  y_ref, vjp_ref = jax.vjp(reference, *args)
  close(y_fast, y_ref)
  cotangent = numpy_normal(7, y_ref.shape)
  for a, b in zip(vjp_fast(cotangent), vjp_ref(cotangent)):
    close(a, b)


CONVS = {  # algorithm -> (input shape, kernel shape, strides, padding, groups)
    "fft": ((2, 21, 19, 3), (9, 9, 3, 4), (1, 1), "SAME", 1),
    "tap_grad": ((2, 13, 11, 2), (3, 3, 2, 5), (1, 1), 1, 1),
    "padded_channels": ((2, 9, 8, 20), (3, 3, 20, 6), (1, 1), "SAME", 1),
    "single_channel": ((2, 13, 11, 1), (3, 3, 1, 5), (1, 1), "SAME", 1),
    "pointwise": ((2, 7, 6, 5), (1, 1, 5, 9), (1, 1), "VALID", 1),
    "depthwise": ((2, 10, 9, 4), (3, 3, 1, 4), (2, 2), "SAME", 4),
    "direct": ((1, 31, 29, 2), (11, 11, 2, 4), (4, 4), "VALID", 1),
    "onednn": ((2, 13, 11, 3), (3, 3, 3, 5), (2, 1), ((1, 0), (2, 1)), 1),
    # Depthwise on oneDNN, with XLA's input gradient, and with both of XLA's gradients.
    "onednn/depthwise": ((2, 10, 9, 4), (3, 3, 1, 4), (2, 2), "SAME", 4),
    "onednn/depthwise_5x5": ((2, 12, 11, 4), (5, 5, 1, 4), (1, 1), "SAME", 4),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv_fast_path_is_the_reference_op(case, monkeypatch):
  # tap_grad (AVX-512) and padded_channels (AVX2) on any host; the XLA forms with oneDNN's
  # convolutions off, oneDNN's where they are built.
  algorithm = case.split("/")[0]
  lanes = 8 if algorithm == "padded_channels" else 16
  monkeypatch.setattr(isa, "vector_floats", lambda: lanes)
  if algorithm != "onednn":
    monkeypatch.setattr(onednn, "available", lambda: False)
  elif not onednn.available():
    pytest.skip(f"oneDNN's convolutions are not built here: {onednn.unavailable_reason()}")
  x_shape, k_shape, strides, padding, groups = CONVS[case]
  assert kernels.conv_algorithm(k_shape, strides, groups, kernels=kernels.XLA_CPU) == algorithm
  assert kernels.conv_algorithm(k_shape, strides, groups, kernels=kernels.REFERENCE) == "direct"
  assert_same_function(
      lambda x, k, kernels: kernels_conv(x, k, strides, padding, groups, kernels),
      numpy_normal(0, x_shape), numpy_normal(1, k_shape) * 0.1)


def kernels_conv(x, k, strides, padding, groups, choice):
  return kernels.conv(x, k, strides, padding, groups, kernels=choice)


@pytest.mark.parametrize("op", ["max_pool", "max_pool_same", "max_pool_ceil", "avg_pool",
                                "adaptive_avg_pool"])
def test_pool_fast_path_is_the_reference_op(op):
  ops = {
      "max_pool": lambda x, kernels: kernels_max_pool(x, (3, 3), (2, 2), "VALID", kernels),
      "max_pool_same": lambda x, kernels: kernels_max_pool(x, (2, 3), (2, 1), "SAME", kernels),
      "max_pool_ceil": lambda x, kernels: kernels_ceil(x, kernels),
      "avg_pool": lambda x, kernels: kernels_avg(x, kernels),
      "adaptive_avg_pool": lambda x, kernels: kernels_adaptive(x, kernels),
  }
  assert_same_function(ops[op], numpy_normal(3, (2, 13, 12, 3)))


def kernels_max_pool(x, window, strides, padding, choice):
  return kernels.max_pool(x, window, strides, padding, kernels=choice)


def kernels_ceil(x, choice):
  return kernels.max_pool_ceil(x, 3, 2, 1, kernels=choice)


def kernels_avg(x, choice):
  return kernels.avg_pool(x, (2, 2), (2, 2), kernels=choice)


def kernels_adaptive(x, choice):
  return kernels.adaptive_avg_pool(x, (5, 4), kernels=choice)


def test_reference_max_pool_is_flax():
  x = numpy_normal(4, (1, 9, 9, 2))
  np.testing.assert_array_equal(
      kernels.max_pool(x, (3, 3), (2, 2), kernels=kernels.REFERENCE),
      nn.max_pool(x, (3, 3), (2, 2)))


def test_the_choice_is_explicit():
  assert kernels.resolve("auto", backend="cpu") == kernels.XLA_CPU
  assert kernels.resolve("auto", backend="gpu") == kernels.REFERENCE
  assert kernels.resolve("reference", backend="cpu") == kernels.REFERENCE
  with pytest.raises(ValueError, match="kernels='fast'"):
    kernels.resolve("fast")
  with pytest.raises(ValueError, match="resolve 'auto'"):  # No op decides by itself.
    kernels.conv(numpy_normal(0, (1, 5, 5, 1)), numpy_normal(1, (3, 3, 1, 2)), kernels=kernels.AUTO)


def test_registry_resolves_the_choice_when_building():
  assert registry.get_model("irma_cnn", num_classes=2).kernels == kernels.resolve("auto")
  model = registry.get_model("irma_cnn", num_classes=2, kernels="reference")
  assert model.kernels == kernels.REFERENCE


@pytest.mark.parametrize("model,size", [
    pytest.param(VGG19(include_top=False), 32, marks=pytest.mark.slow),
    (AlexNet(include_top=False), 67),
    pytest.param(SqueezeNet11(num_classes=3), 35, marks=pytest.mark.slow),
    pytest.param(GoogLeNet(num_classes=3, variant="2014"), 35, marks=pytest.mark.slow)],
    ids=["vgg19", "alexnet", "squeezenet", "googlenet"])
def test_backbones_use_the_facade_with_the_same_parameters(model, size):
  """Backbones through the façade: one parameter tree for both choices (and ``Conv``'s are
  ``nn.Conv``'s, test_conv), so imported weights and checkpoints fit; the same features."""
  x = numpy_normal(5, (1, size, size, 3))
  reference = model.clone(kernels=kernels.REFERENCE)
  shapes = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(m.init, jax.random.PRNGKey(0), x))
  assert shapes(model) == shapes(reference)
  variables = random_variables(reference, x)
  fast, slow = jax.jit(model.apply)(variables, x)[1], jax.jit(reference.apply)(variables, x)[1]
  for name in slow:
    close(fast[name], slow[name])
