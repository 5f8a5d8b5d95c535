"""k-means (k-means++ seeding, Lloyd iterations) for the VLAD vocabulary of system 5.

The algorithm follows scikit-learn's ``KMeans(algorithm="lloyd")`` so inertias are comparable:

* greedy k-means++ seeding with ``2 + int(log k)`` local trials per centre;
* Lloyd iterations stopped when the summed squared centre shift falls below
  ``tol * mean(var(x, axis=0))`` (the shift is exactly 0 when no label changes, which covers
  sklearn's "strict convergence" test);
* empty clusters are re-seeded with the points farthest from their assigned centre, the
  point being moved out of its old cluster's sum and count;
* the data are centred first (as sklearn does) so that the ``||x||^2 - 2 x.c + ||c||^2``
  distance form keeps float32 precision.

``fit`` is the one driver (the pipeline, the tests and ``benchmarks/kmeans.py`` all run
it): one jitted Lloyd step per iteration, so that with a ``checkpoint`` file the
centres and iteration count are saved after the seeding and after every iteration and a
killed fit resumes where it stopped.

By default each step is Hamerly's (2010) exact acceleration of Lloyd's: per row an upper
bound on the distance to its centre and a lower bound on the distance to any other, moved
by the centres' shifts, prove most rows' labels unchanged once the centres settle, so
only the other rows are measured and the cluster sums are updated by the rows that change
cluster. The labels, iterations and stopping point are Lloyd's; the centres differ only
by the order the sums are added in.

Distances are computed in that matmul form over row chunks of ``chunk_size`` examples, so
memory stays at ``chunk_size * k`` distances whatever the number of descriptors. Chunks are
taken with a stride (chunk ``i`` holds rows ``i, i + n_chunks, ...``) rather than as
contiguous blocks: when ``x`` is sharded along its example axis over a ``Mesh`` every chunk
then stays spread over all devices, so the scan over chunks runs data-parallel.
"""
import functools
import logging
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from medjax import kernels
from medjax.atomic import save_npz
from medjax.features.hamerly import Bounds, _labelled_inertia, _pruned_step, fresh_bounds
from medjax.features.lloyd import (_iteration_stats, _lloyd_step, _nearest, _sq_dist, _Strided,
                                   _strided, finalize, unstride)

# Small enough that a chunk's (chunk, k) distances stay in the L2 cache.
DEFAULT_CHUNK_SIZE = 2048


class KMeansResult(NamedTuple):
  centers: np.ndarray  # (k, D)
  inertia: float       # sum of squared distances to the closest centre
  n_iter: int          # Lloyd iterations run
  converged: bool      # the shift test passed before max_iter


@functools.partial(kernels.jit, static_argnames=("chunk_size",))
def lloyd_iteration(centers: jax.Array, x: jax.Array, *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
  """One full-batch Lloyd iteration on ``x``: ``(new_centers, shift)`` as ``finalize``
  returns them (the step ``fit`` saves its progress after)."""
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)
  return finalize(centers, _iteration_stats(centers, data))


@kernels.jit
def _column_mean(x):
  return jnp.mean(x, axis=0)


def _prepare(x, *, chunk_size: int):
  """``(strided layout of x centred on its mean, mean, mean per-feature variance)``: the
  layout and squared norms are made once per fit, not once per pass, on the device, and
  the rows are ``x`` itself, centred chunk by chunk as the passes read them."""
  mean = _column_mean(x)
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size, offset=mean)
  # The centred rows' mean is zero, so their variance is the mean square: no extra pass.
  return data, mean, jnp.sum(data.sq_norms) / x.size


def _rows(data: _Strided, n: int):
  """The first ``n`` centred rows and squared norms of ``data`` in their original order (a
  centred copy, inside the seeding program that runs once per fit)."""
  return data.rows[:n] - data.offset, data.sq_norms.reshape(-1)[:n]


@functools.partial(kernels.jit, static_argnames=("k", "n"))
def _init_strided(data: _Strided, k: int, n: int, key):
  return _kmeans_plusplus(*_rows(data, n), k, key)


@kernels.jit
def _strided_inertia(centers, data: _Strided):
  def one_chunk(i):
    chunk, sq_norms, mask = data.chunk(i)
    return jnp.sum(jnp.where(mask, _nearest(_sq_dist(chunk, sq_norms, centers))[1], 0.0))

  return jnp.sum(jax.lax.map(one_chunk, jnp.arange(data.n_chunks)))


def _kmeans_plusplus(x, x_sq, k, key):
  n = x.shape[0]
  n_trials = 2 + int(math.log(k))
  first_key, key = jax.random.split(key)
  first = x[jax.random.randint(first_key, (), 0, n)]
  closest = _sq_dist(x, x_sq, first[None])[:, 0]
  centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)

  def body(c, carry):
    centers, closest, potential, key = carry
    key, sub = jax.random.split(key)
    targets = jax.random.uniform(sub, (n_trials,), x.dtype) * potential
    candidates = jnp.minimum(jnp.searchsorted(jnp.cumsum(closest), targets), n - 1)
    points = x[candidates]
    dist = jnp.minimum(closest[:, None], _sq_dist(x, x_sq, points))
    potentials = jnp.sum(dist, axis=0)
    best = jnp.argmin(potentials)
    return centers.at[c].set(points[best]), dist[:, best], potentials[best], key

  centers, *_ = jax.lax.fori_loop(1, k, body, (centers, closest, jnp.sum(closest), key))
  return centers


@functools.partial(kernels.jit, static_argnames=("k",))
def init(x: jax.Array, k: int, *, key: jax.Array) -> jax.Array:
  """Greedy k-means++ seeding (sklearn's ``_kmeans_plusplus``) of ``k`` centres from ``x``."""
  return _kmeans_plusplus(x, jnp.sum(x * x, axis=-1), k, key)


def _load_progress(path: Path, shape, bounds_like: Bounds | None):
  """``(centres, iteration, converged, bounds or None)`` saved by :func:`_one_run`; the
  bounds come back only when they were saved for the same layout."""
  with np.load(path) as z:
    centers, iteration, converged = z["centers"], int(z["iteration"]), bool(z["converged"])
    bounds = None
    if bounds_like is not None and all(
        f"bounds_{name}" in z and z[f"bounds_{name}"].shape == like.shape
        for name, like in zip(Bounds._fields, bounds_like)):
      bounds = Bounds(*(jnp.asarray(z[f"bounds_{name}"]) for name in Bounds._fields))
  if centers.shape != shape:
    raise ValueError(f"{path} holds k-means centres of shape {centers.shape}, not {shape}; "
                     f"delete it or use a new workdir")
  logging.info("Resuming k-means (k=%d) at iteration %d.", shape[0], iteration)
  return jnp.asarray(centers), iteration, converged, bounds


def _one_run(data, n, k, key, init_centers, tol_abs, max_iter, checkpoint, algorithm):
  """Seeding (or ``init_centers``) then Lloyd iterations on the ``n`` centred rows laid out
  in ``data``; returns ``(centres, iterations, converged, inertia or None)``, saving
  progress to ``checkpoint`` if given. The inertia is known only when a full pass left
  the centres exactly where they were.

  The Hamerly bounds are saved with the centres, so that a resumed fit carries the same
  cluster sums forward and ends bit for bit where an uninterrupted one does (summed
  afresh, round-off alone would set a long fit on another path).
  """
  def save(centers, iteration, converged, bounds):
    if checkpoint is not None:
      saved = {} if bounds is None else {
          f"bounds_{name}": np.asarray(a) for name, a in zip(Bounds._fields, bounds)}
      save_npz(checkpoint, centers=np.asarray(centers), iteration=iteration,
               converged=converged, **saved)

  bounds = fresh_bounds(data, k) if algorithm == "hamerly" else None
  if checkpoint is not None and checkpoint.exists():
    centers, iteration, converged, saved = _load_progress(
        checkpoint, (k, data.rows.shape[-1]), bounds)
    bounds = saved if saved is not None else bounds
  else:
    if checkpoint is not None:
      checkpoint.parent.mkdir(parents=True, exist_ok=True)
    centers = (_init_strided(data, k, n, key) if init_centers is None
               else jnp.asarray(init_centers))
    iteration, converged = 0, False
    save(centers, iteration, converged, None)
  known_inertia = None
  while not converged and iteration < max_iter:
    if bounds is None:
      centers, shift, before = _lloyd_step(centers, data)
    else:
      centers, shift, bounds = _pruned_step(centers, data, bounds)
    iteration += 1
    shift = float(shift)
    converged = shift <= tol_abs
    known_inertia = None
    if shift == 0.0 and bounds is None:
      known_inertia = float(before)
    elif shift == 0.0:
      # Unmoved centres: every labelled row's label is its nearest centre's.
      labelled, inertia = _labelled_inertia(centers, data, bounds.labels)
      known_inertia = float(inertia) if bool(labelled) else None
    save(centers, iteration, converged, bounds)
  return centers, iteration, converged, known_inertia


def fit(x, k: int, *, key: jax.Array, n_init: int = 1, max_iter: int = 300,
        tol: float = 1e-4, init_centers=None, checkpoint: Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE, algorithm: str = "hamerly") -> KMeansResult:
  """k-means on ``x`` ``(N, D)`` (a NumPy array, or a jax.Array, sharded or not).

  Each run stops after ``max_iter`` Lloyd iterations or once the squared centre shift is
  at most ``tol * mean(var(x, axis=0))``; the best of ``n_init`` k-means++ restarts is
  kept. ``init_centers`` ``(k, D)`` replaces the seeding (and, as in sklearn, implies a
  single run). ``checkpoint`` (a ``.npz`` path, single run only) holds the progress; a
  rerun continues from it. ``inertia`` is that of the returned centres.

  ``algorithm`` is ``"hamerly"`` (the default: the same iterations, skipping the rows
  whose distance bounds prove their centre unchanged) or ``"lloyd"`` (every row measured
  every iteration). ``x`` sharded over several devices always runs ``"lloyd"``: the
  pruned step gathers the rows it measures, which would pull them across devices.
  """
  if algorithm not in ("hamerly", "lloyd"):
    raise ValueError(f"k-means algorithm must be 'hamerly' or 'lloyd'; got {algorithm!r}")
  if len(x) < k:
    raise ValueError(f"k-means with k={k} needs at least {k} points; got {len(x)}")
  if init_centers is not None:
    n_init = 1
  if checkpoint is not None and n_init != 1:
    raise ValueError("a checkpointed k-means fit runs one initialisation (n_init=1)")
  data, mean, spread = _prepare(jnp.asarray(x), chunk_size=chunk_size)
  if len(data.rows.sharding.device_set) > 1:
    algorithm = "lloyd"
  tol_abs = tol * float(spread)
  if init_centers is not None:
    init_centers = jnp.asarray(init_centers) - mean
  keys = [key] if n_init == 1 else list(jax.random.split(key, n_init))
  best = None
  checkpoint = None if checkpoint is None else Path(checkpoint)
  for run_key in keys:
    centers, n_iter, converged, run_inertia = _one_run(data, len(x), k, run_key, init_centers,
                                                       tol_abs, max_iter, checkpoint,
                                                       algorithm)
    if run_inertia is None:
      run_inertia = float(_strided_inertia(centers, data))
    if best is None or run_inertia < best.inertia:
      best = KMeansResult(np.asarray(centers + mean), run_inertia, n_iter, converged)
  return best


@functools.partial(kernels.jit, static_argnames=("chunk_size",))
def assign(centers: jax.Array, x: jax.Array, *,
           chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
  """Closest centre of every row of ``x``: ``(labels, squared distances)``, both ``(N,)``."""
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)

  def one_chunk(i):
    chunk, sq_norms, _ = data.chunk(i)
    return _nearest(_sq_dist(chunk, sq_norms, centers))

  labels, sq_dist = jax.lax.map(one_chunk, jnp.arange(data.n_chunks))
  return unstride(labels, x.shape[0]), unstride(sq_dist, x.shape[0])


def inertia(centers: jax.Array, x: jax.Array, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
  """Sum of squared distances of the rows of ``x`` to their closest centre."""
  return jnp.sum(assign(centers, x, chunk_size=chunk_size)[1])
