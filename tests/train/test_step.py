"""``medjax.train.step``: several steps per call, and the logged parameter norm."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import lenet_imageclef15
from medjax import parallel
from medjax import optim
from medjax.train import step
from tests.compare import numpy_normal


@pytest.mark.slow
def test_steps_in_one_call_equal_steps_in_separate_calls():
  """``config.steps_per_call`` changes how steps are dispatched, not what they compute:
  the state after four steps in one call is the state after four calls of one step."""
  config = lenet_imageclef15.get_config("image_size=64")
  config.optimizer.momentum = 0.9  # Optimiser state that carries from step to step.
  mesh = parallel.make_mesh()
  model = step.build_model(config, 4)
  tx = optim.make(config.optimizer, steps_per_epoch=10)
  rng = np.random.default_rng(0)
  batches = tuple(
      parallel.to_global({"image": rng.random((4, 64, 64, 1), np.float32),
                          "label": rng.integers(0, 2, (4, 4)).astype(np.float32)},
                         parallel.batch_sharding(mesh))
      for _ in range(4))
  train_steps = step.make_train_steps(model, tx, config.loss)
  together, metrics = train_steps(step.init_state(model, tx, config, (64, 64, 1), mesh), batches)
  state, separate = step.init_state(model, tx, config, (64, 64, 1), mesh), []
  for batch in batches:
    state, (m,) = train_steps(state, (batch,))
    separate.append(m)
  assert int(together.step) == int(state.step) == 4
  np.testing.assert_allclose([m["loss"] for m in metrics], [m["loss"] for m in separate],
                             rtol=1e-5)
  assert len({float(m["loss"]) for m in metrics}) == 4  # Four different steps were taken.
  for a, b in zip(jax.tree.leaves((together.params, together.opt_state)),
                  jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_global_norm_is_optax_global_norm():
  tree = {"kernel": numpy_normal(0, (3, 140, 50)), "bias": numpy_normal(1, (50,)),
          "head": [numpy_normal(2, (7, 1)), jnp.zeros((2, 2))]}
  np.testing.assert_allclose(step.global_norm(tree), optax.global_norm(tree), rtol=1e-6)
  assert float(step.global_norm({"w": jnp.array([3.0, 4.0])})) == 5.0


def test_selected_initialisation_is_that_part_of_the_whole_and_abstract_state_its_layout():
  """What a pretrained run draws (only the tensors it does not import) has the values the
  whole initialisation gives them; the abstract state is what a resume restores into."""
  from tests.conftest import tiny_config
  config = tiny_config("unused", "unused")
  mesh = parallel.make_mesh()
  model = step.build_model(config, 2)
  tx = optim.make(config.optimizer, 10)
  whole = step.init_state(model, tx, config, (32, 32, 1), mesh)
  last = sorted(whole.params)[-1]
  part = step.init_state(model, tx, config, (32, 32, 1), mesh,
                         select=lambda s: (s.params[last], s.rng))
  jax.tree.map(np.testing.assert_array_equal, part, (whole.params[last], whole.rng))
  abstract = step.abstract_state(model, tx, config, (32, 32, 1), mesh)
  assert jax.tree.structure(abstract) == jax.tree.structure(whole)
  for a, w in zip(jax.tree.leaves(abstract), jax.tree.leaves(whole)):
    assert (a.shape, a.dtype, a.sharding) == (w.shape, w.dtype, w.sharding)
