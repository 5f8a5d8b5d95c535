"""The one L2 normalisation of the frozen-feature stage (extraction, VLAD, every aggregation
and inference share it, so a code is normalised the same way wherever it is made)."""
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Unit L2 norm along ``axis``; an all-zero vector stays zero."""
  norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
  return x / jnp.where(norm > 0, norm, 1.0)
