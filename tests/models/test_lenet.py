"""The two LeNets: the deeplearning.net tutorial's (system 1) and Caffe's (system 2's arm)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from medjax import kernels
from medjax.models.lenet import LeNet, LeNetOneVsAll
from medjax.train import losses
from tests.compare import numpy_normal


def test_tutorial_init_bounds_at_the_papers_shapes():
  # LeNetConvPoolLayer: fan_in = in*kh*kw, fan_out = out*kh*kw // (2*2); HiddenLayer:
  # sqrt(6 / (n_in + n_out)); LogisticRegression and every bias: zero.
  expected = {
      "conv0": math.sqrt(6 / (1 * 15 * 15 + 20 * 15 * 15 // 4)),    # 6 / 1350
      "conv1": math.sqrt(6 / (20 * 15 * 15 + 50 * 15 * 15 // 4)),   # 6 / 7312
      "hidden": math.sqrt(6 / (53 * 53 * 50 + 500)),
  }
  assert expected["conv0"] == pytest.approx(0.0667, abs=1e-4)
  assert expected["conv1"] == pytest.approx(0.0286, abs=1e-4)
  init = kernels.jit(LeNet().init, once=True)  # As the trainer compiles it.
  params = init(jax.random.key(0), jnp.zeros((1, 256, 256, 1)))["params"]
  for name, bound in expected.items():
    w = np.asarray(params[name]["kernel"])
    # Thousands of uniform draws: the extremes lie within 1 % of the bound.
    assert bound * 0.99 < np.abs(w).max() <= bound, name
    assert abs(w.mean()) < bound / 20, name
  for leaf in (params["logistic"]["kernel"], params["logistic"]["bias"], params["conv0_bias"],
               params["conv1_bias"], params["hidden"]["bias"]):
    assert not np.any(leaf)


def small(**kwargs):
  return LeNet(kernel_size=5, filters=(4, 6), hidden=8, **kwargs)


@functools.partial(kernels.jit, once=True)  # One compilation, not one per leaf.
def perturbed(variables):
  """``variables`` moved off the zero-initialised head, so that the outputs differ."""
  return jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape),
                      variables)


def test_two_way_head_returns_the_log_odds_of_a_two_output_layer():
  x = numpy_normal(1, (3, 20, 20, 1))
  model = small()
  variables = kernels.jit(model.init, once=True)(jax.random.key(0), x)
  assert variables["params"]["logistic"]["kernel"].shape == (8, 2)
  variables = perturbed(variables)
  logits, features = jax.jit(model.apply)(variables, x)
  z = features["two_way_logits"]
  np.testing.assert_allclose(logits[:, 0], z[:, 1] - z[:, 0], rtol=1e-6)
  labels = jnp.array([0, 1, 1])
  np.testing.assert_allclose(
      optax.sigmoid_binary_cross_entropy(logits[:, 0], labels),
      optax.softmax_cross_entropy_with_integer_labels(z, labels), rtol=1e-5)


@pytest.mark.slow
def test_two_way_head_moves_twice_as_fast_as_one_logit_under_sgd():
  """Why the single logit is not the tutorial: from the zero start, one SGD step on the
  same loss changes the two-way log-odds by twice what it changes one logit by."""
  x = numpy_normal(1, (4, 20, 20, 1))
  labels = jnp.array([[1.0], [0.0], [1.0], [1.0]])

  def logits_after_a_step(head):
    model = small(head=head)
    params = kernels.jit(model.init, once=True)(jax.random.key(0), x)["params"]
    loss = lambda p: losses.loss_fn("sigmoid_xent", model.apply({"params": p}, x)[0],
                                    labels).mean()
    params = jax.tree.map(lambda p, g: p - 0.005 * g, params, jax.jit(jax.grad(loss))(params))
    return jax.jit(model.apply)({"params": params}, x)[0]

  one, two = logits_after_a_step("one_logit"), logits_after_a_step("two_way")
  assert np.all(np.abs(one) > 0)
  np.testing.assert_allclose(two, 2 * one, rtol=1e-4)


@pytest.mark.slow
def test_one_vs_all_loss_is_the_sum_of_the_heads_two_way_nll():
  x = numpy_normal(1, (5, 20, 20, 1))
  model = LeNetOneVsAll(num_classes=3, kernel_size=5, filters=(4, 6), hidden=8)
  variables = kernels.jit(model.init, once=True)(jax.random.key(0), x)
  variables = perturbed(variables)
  logits, features = jax.jit(model.apply)(variables, x)
  assert logits.shape == (5, 3) and features["two_way_logits"].shape == (5, 2, 3)
  targets = jnp.array([[1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
  nll = sum(optax.softmax_cross_entropy_with_integer_labels(
      features["two_way_logits"][:, :, h], targets[:, h]) for h in range(3))
  np.testing.assert_allclose(losses.loss_fn("sigmoid_xent", logits, targets), nll, rtol=1e-5)
  # A label is predicted where the two-way softmax puts more mass on "present".
  np.testing.assert_array_equal(logits > 0, features["two_way_logits"].argmax(1) == 1)


def test_caffe_lenet_has_no_relu_after_its_conv_pools():
  x = numpy_normal(1, (2, 28, 28, 1))
  model = LeNet(num_classes=10, kernel_size=5, variant="caffe")
  variables = kernels.jit(model.init, once=True)(jax.random.key(0), x)
  logits, features = jax.jit(model.apply)(variables, x)
  assert logits.shape == (2, 10)
  # Linear conv-pools take negative values; the ReLU is on ip1 only.
  assert features["conv0"].min() < 0 and features["conv1"].min() < 0
  assert features["pre_logits"].min() >= 0
  # Caffe's lenet_train_test.prototxt: 520 + 25,050 + 400,500 + 5,010 parameters.
  assert sum(p.size for p in jax.tree.leaves(variables)) == 431_080
  # The xavier filler: uniform +-sqrt(3 / fan_in) (conv2: fan_in 20*5*5).
  w = np.asarray(variables["params"]["conv1"]["kernel"])
  assert math.sqrt(3 / 500) * 0.99 < np.abs(w).max() <= math.sqrt(3 / 500)


def test_unknown_variant_or_head_is_clear():
  with pytest.raises(ValueError, match="variant='lecun'"):
    small(variant="lecun").init(jax.random.key(0), jnp.zeros((1, 20, 20, 1)))
