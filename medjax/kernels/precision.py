"""Mixed precision (``config.compute_dtype``): the forward and backward passes in a
narrower float, everything that accumulates in float32.

Parameters, optimizer state and batch-norm running statistics stay float32 and are cast
to the compute dtype only where a layer reads them, so updates smaller than a bfloat16
step are not lost; logits and features come back as float32, so the loss, its mean and
every metric are float32 sums. ``"float32"`` (the default) casts nothing.
"""
import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The dtype ``config.compute_dtype`` names; a ``ValueError`` naming the choices else."""
  if name not in DTYPES:
    raise ValueError(f"config.compute_dtype={name!r}; expected one of {sorted(DTYPES)}")
  return DTYPES[name]


def accumulation_dtype(dtype):
  """What sums over ``dtype`` values accumulate in: float32 for narrower floats (bfloat16,
  float16), the dtype itself otherwise (float64 stays float64)."""
  return jnp.promote_types(dtype, jnp.float32)


def is_narrow(dtype) -> bool:
  """Whether ``dtype`` is a float narrower than float32."""
  return accumulation_dtype(dtype) != dtype


def name_of(config) -> str:
  """``config.compute_dtype``, float32 for configs written before it existed."""
  return config.get("compute_dtype", "float32")


def cast(tree, dtype):
  """``tree`` with its floating-point leaves in ``dtype`` (integers and bools untouched)."""
  if dtype == jnp.float32:
    return tree
  return jax.tree.map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
      tree)


def to_float32(tree):
  """``tree`` with its floating-point leaves in float32."""
  return jax.tree.map(
      lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)
