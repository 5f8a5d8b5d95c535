"""PCA fitted on training features only (VLAD dimensionality reduction, system 5).

Results match scikit-learn's ``PCA``: ``explained_variance`` uses the ``N - 1`` denominator,
whitening divides by its square root, and components follow sklearn's ``svd_flip`` sign rule
(the largest-magnitude entry of every component is positive) so fits are deterministic.

Two routes, chosen automatically by ``fit``:

* covariance route (``D <= N``): eigendecomposition of the ``D x D`` covariance;
* Gram route (``D > N``): eigendecomposition of the ``N x N`` Gram matrix ``Xc Xc^T`` of the
  centred data, the components being recovered as ``Xc^T u / sqrt(lambda)``. VLAD with
  ``k = 256`` centres of 512-d descriptors is 131072-d, whose covariance (64 GiB in float32)
  cannot even be stored, while a Gram matrix of a few thousand images is small.

The covariance route can also be fed in chunks (``accumulate`` then ``finalize``) for data that
does not fit in memory. Statistics are kept as count, mean and centred scatter matrix, merged
with Chan et al.'s pairwise update: the same information as ``sum x``, ``sum x x^T`` and the
count, but without the catastrophic cancellation of ``sum x x^T - N m m^T`` in float32. The
Gram route needs all rows at once by construction (every entry pairs two examples), so it is
in-memory only. Everything runs in the input dtype: float32, or float64 when x64 is enabled.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


class PCAParams(NamedTuple):
  mean: jax.Array                # (D,)
  components: jax.Array          # (n_components, D), orthonormal rows
  explained_variance: jax.Array  # (n_components,), descending
  whiten: jax.Array              # () bool; an array so that params stay a pytree of arrays


class CovarianceStats(NamedTuple):
  count: jax.Array    # ()
  mean: jax.Array     # (D,)
  scatter: jax.Array  # (D, D) sum of (x - mean)(x - mean)^T


def _svd_flip(components):
  pivot = jnp.argmax(jnp.abs(components), axis=1)
  signs = jnp.sign(jnp.take_along_axis(components, pivot[:, None], axis=1))
  return components * jnp.where(signs == 0, 1.0, signs)


def _params(mean, components, variance, whiten):
  return PCAParams(mean=mean, components=_svd_flip(components), explained_variance=variance,
                   whiten=jnp.asarray(whiten))


@jax.jit
def accumulate(stats: CovarianceStats | None, chunk: jax.Array,
               mask: jax.Array | None = None) -> CovarianceStats:
  """Merges a chunk ``(n, D)`` into the running statistics (``None`` starts them).

  ``mask`` ``(n,)`` excludes padded rows of a ragged last chunk.
  """
  weight = jnp.ones(chunk.shape[:1], chunk.dtype) if mask is None else mask.astype(chunk.dtype)
  n_b = jnp.sum(weight)
  mean_b = jnp.sum(chunk * weight[:, None], axis=0) / jnp.maximum(n_b, 1.0)
  centred = (chunk - mean_b) * weight[:, None]
  scatter_b = jnp.dot(centred.T, centred, precision=_HIGHEST)
  if stats is None:
    return CovarianceStats(count=n_b, mean=mean_b, scatter=scatter_b)
  n = stats.count + n_b
  delta = mean_b - stats.mean
  frac = n_b / jnp.maximum(n, 1.0)
  return CovarianceStats(
      count=n, mean=stats.mean + frac * delta,
      scatter=stats.scatter + scatter_b + (stats.count * frac) * jnp.outer(delta, delta))


@functools.partial(jax.jit, static_argnames=("n_components", "whiten"))
def finalize(stats: CovarianceStats, n_components: int, *, whiten: bool = False) -> PCAParams:
  """Covariance route: top eigenpairs of ``scatter / (N - 1)``."""
  eigvals, eigvecs = jnp.linalg.eigh(stats.scatter / (stats.count - 1.0))
  top = slice(-1, -n_components - 1, -1)
  return _params(stats.mean, eigvecs[:, top].T, jnp.maximum(eigvals[top], 0.0), whiten)


@functools.partial(jax.jit, static_argnames=("n_components", "whiten"))
def _fit_gram(x, n_components, whiten):
  mean = jnp.mean(x, axis=0)
  centred = x - mean
  gram = jnp.dot(centred, centred.T, precision=_HIGHEST)
  eigvals, eigvecs = jnp.linalg.eigh(gram)
  top = slice(-1, -n_components - 1, -1)
  eigvals, eigvecs = jnp.maximum(eigvals[top], 0.0), eigvecs[:, top]
  # Xc^T u has norm sqrt(lambda); a numerically null direction is left as a zero component.
  scale = jnp.where(eigvals > 0, 1.0 / jnp.sqrt(jnp.where(eigvals > 0, eigvals, 1.0)), 0.0)
  components = jnp.dot(eigvecs.T, centred, precision=_HIGHEST) * scale[:, None]
  return _params(mean, components, eigvals / (x.shape[0] - 1), whiten)


def fit(x: jax.Array, n_components: int, *, whiten: bool = False) -> PCAParams:
  """PCA of ``x`` ``(N, D)``, through the covariance if ``D <= N`` else the Gram matrix."""
  n, d = x.shape
  if not 0 < n_components <= min(n, d):
    raise ValueError(f"n_components={n_components} must be in [1, min(N, D)={min(n, d)}]")
  if d <= n:
    return finalize(accumulate(None, x), n_components, whiten=whiten)
  return _fit_gram(x, n_components, whiten)


@jax.jit
def transform(params: PCAParams, x: jax.Array) -> jax.Array:
  """Projects ``x`` ``(N, D)`` onto the components: ``(N, n_components)``."""
  z = jnp.dot(x - params.mean, params.components.T, precision=_HIGHEST)
  scale = jnp.sqrt(params.explained_variance)
  return jnp.where(params.whiten, z / jnp.where(scale > 0, scale, 1.0), z)
