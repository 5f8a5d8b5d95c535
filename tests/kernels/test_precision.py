"""Mixed precision (``config.compute_dtype``): bfloat16 compute, float32 state and outputs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from medjax import kernels, parallel
from medjax.kernels import precision
from medjax.models.layers import BatchNorm
from medjax.train import step


def test_cast_touches_floats_only_and_float32_is_a_no_op():
  tree = {"w": jnp.ones((2, 2)), "count": jnp.arange(3), "flag": jnp.array(True)}
  cast = precision.cast(tree, jnp.bfloat16)
  assert cast["w"].dtype == jnp.bfloat16
  assert cast["count"].dtype == tree["count"].dtype and cast["flag"].dtype == jnp.bool_
  assert precision.cast(tree, jnp.float32) is tree
  assert precision.to_float32(cast)["w"].dtype == jnp.float32


def test_unknown_compute_dtype_names_the_key_and_the_choices():
  with pytest.raises(ValueError, match=r"config.compute_dtype='float16'; expected one of "
                                       r"\['bfloat16', 'float32'\]"):
    precision.compute_dtype("float16")


class TinyBNNet(nn.Module):
  """Conv, medjax's batch norm, conv, dropout, dense: every kind of state the trainer's step
  carries, and a layer that reads the batch norm's output in the compute dtype."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = kernels.Conv(8, (3, 3), kernels=kernels.XLA_CPU)(x)
    x = BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = kernels.Conv(8, (1, 1), kernels=kernels.XLA_CPU)(x)
    x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
    pre_logits = jnp.mean(x, axis=(1, 2))
    return nn.Dense(2)(pre_logits), {"pre_logits": pre_logits}


def _setup(compute_dtype):
  """The trainer's step and prediction on :class:`TinyBNNet` at 16 px, on one fixed batch."""
  config = ml_collections.ConfigDict({"seed": 0})
  mesh = parallel.make_mesh()
  model = TinyBNNet()
  tx = optax.adamw(1e-2)
  state = step.init_state(model, tx, config, (16, 16, 3), mesh)
  rng = np.random.default_rng(0)
  batch = parallel.to_global({"image": rng.random((8, 16, 16, 3), np.float32) * 2 - 1,
                              "label": np.arange(8, dtype=np.int32) % 2},
                             parallel.batch_sharding(mesh))
  steps = step.make_train_steps(model, tx, "softmax_xent", compute_dtype)
  return state, steps, batch, step.make_predict(model, compute_dtype)


def test_bfloat16_training_keeps_float32_state_and_tracks_float32():
  state32, steps32, batch, predict32 = _setup("float32")
  state16, steps16, _, predict16 = _setup("bfloat16")
  before = [np.asarray(a) for a in jax.tree.leaves(state16.model_state)]  # Steps donate it.
  losses = []
  for _ in range(3):
    state32, (m32,) = steps32(state32, (batch,))
    state16, (m16,) = steps16(state16, (batch,))
    losses.append((float(m16["loss"]), float(m32["loss"])))
  # Parameters, optimizer state and batch statistics stay float32 ...
  for leaf in jax.tree.leaves((state16.params, state16.opt_state, state16.model_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  # ... the loss is a float32 number, at the same parameters close to the float32 one's,
  # and falling as the float32 run's does ...
  assert m16["loss"].dtype == jnp.float32
  np.testing.assert_allclose(losses[0][0], losses[0][1], rtol=0.05)
  assert losses[0][0] != losses[0][1]  # The model did run in bfloat16.
  assert losses[-1][0] < losses[0][0] and losses[-1][1] < losses[0][1]
  # ... the batch statistics moved (bfloat16 rounding did not freeze them) ...
  moved = [np.abs(np.asarray(a) - np.asarray(b)).max()
           for a, b in zip(jax.tree.leaves(state16.model_state), before)]
  assert max(moved) > 0
  # ... and prediction returns float32 logits close to float32 compute's.
  logits16, pre16 = predict16(state16.params, state16.model_state, batch["image"])
  logits32, _ = predict32(state16.params, state16.model_state, batch["image"])
  assert logits16.dtype == pre16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, atol=0.1 * float(jnp.abs(logits32).max()))
