"""``medjax.train.step``: the logged parameter norm."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from medjax.train import step


def test_global_norm_is_optax_global_norm():
  keys = jax.random.split(jax.random.key(0), 3)
  tree = {"kernel": jax.random.normal(keys[0], (3, 140, 50)),
          "bias": jax.random.normal(keys[1], (50,)),
          "head": [jax.random.normal(keys[2], (7, 1)), jnp.zeros((2, 2))]}
  np.testing.assert_allclose(step.global_norm(tree), optax.global_norm(tree), rtol=1e-6)
  assert float(step.global_norm({"w": jnp.array([3.0, 4.0])})) == 5.0
