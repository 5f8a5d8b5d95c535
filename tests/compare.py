"""Comparing nested results (``results.json``-like dicts) with the right strictness per leaf.

``pytest.approx`` takes only flat numbers, sequences or mappings, and newer pytest releases
refuse mappings holding lists (a confusion matrix, a PR curve). Counts must agree exactly
whatever the tolerance; floats, alone or inside lists, within ``rel``/``abs``.
"""
import math
from numbers import Integral, Real

import jax
import numpy as np


def _is_int(x) -> bool:
  return isinstance(x, Integral) and not isinstance(x, bool)


def tree_mismatches(got, want, rel: float = 1e-6, abs_: float = 1e-12, path: str = "") -> list[str]:
  """Every place where ``got`` differs from ``want``: keys, lengths, types, values."""
  where = path or "<root>"
  if isinstance(want, dict):
    if not isinstance(got, dict):
      return [f"{where}: expected a dict, got {type(got).__name__}"]
    out = [f"{path}/{k}: missing" for k in sorted(set(want) - set(got))]
    out += [f"{path}/{k}: unexpected" for k in sorted(set(got) - set(want))]
    for k in sorted(set(want) & set(got)):
      out += tree_mismatches(got[k], want[k], rel, abs_, f"{path}/{k}")
    return out
  if isinstance(want, (list, tuple)):
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
      return [f"{where}: expected a sequence of {len(want)}, got {got!r:.200}"]
    out = []
    for i, (g, w) in enumerate(zip(got, want)):
      out += tree_mismatches(g, w, rel, abs_, f"{path}[{i}]")
    return out
  if _is_int(want) and _is_int(got):
    return [] if got == want else [f"{where}: count {got} != {want}"]
  if isinstance(want, Real) and isinstance(got, Real) and not isinstance(want, bool):
    if math.isnan(want) and math.isnan(got):
      return []
    ok = math.isclose(got, want, rel_tol=rel, abs_tol=abs_)
    return [] if ok else [f"{where}: {got!r} != {want!r} (rel {rel}, abs {abs_})"]
  return [] if got == want else [f"{where}: {got!r:.200} != {want!r:.200}"]


def assert_tree_close(got, want, rel: float = 1e-6, abs_: float = 1e-12) -> None:
  """Fails listing every mismatch; integers (counts) must be equal, floats close."""
  problems = tree_mismatches(got, want, rel, abs_)
  assert not problems, "results differ:\n  " + "\n  ".join(problems[:30])


def numpy_uniform(seed: int, shape: tuple, low: float = 0.0, high: float = 1.0) -> jax.Array:
  """A float32 test input drawn by NumPy: an eager ``jax.random`` draw compiles a threefry
  program per shape, slowly for small four-dimensional shapes at XLA:CPU's default level
  (docs/performance.md, "The README's test command, timed")."""
  return jax.numpy.asarray(np.random.default_rng(seed).uniform(low, high, shape), np.float32)


def numpy_normal(seed: int, shape: tuple, dtype=np.float32) -> jax.Array:
  """A standard-normal test input drawn by NumPy (see :func:`numpy_uniform`), rounded once
  from float64 to ``dtype``."""
  return jax.numpy.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def random_variables(model, *args, seed: int = 0, **kwargs):
  """Variables with ``model.init``'s tree, drawn by NumPy: weights scaled by fan-in,
  positive batch-norm variances. ``init`` traces, compiles and runs the forward pass and
  every initializer (15-40 s for EfficientNet or GoogLeNet on 2 cores); a test comparing
  two computations on the same weights needs only their shapes."""
  shapes = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a, **kwargs), *args)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = str(getattr(path[-1], "key", path[-1])), leaf.shape
    if name == "var":
      value = rng.uniform(0.5, 1.5, shape)
    elif name == "scale":
      value = 1.0 + 0.1 * rng.standard_normal(shape)
    elif len(shape) < 2:  # Biases, batch-norm means.
      value = 0.1 * rng.standard_normal(shape)
    else:
      value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
    return jax.numpy.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)
