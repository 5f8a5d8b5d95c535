"""k-means (k-means++ seeding, Lloyd iterations) for the VLAD vocabulary of system 5.

The algorithm follows scikit-learn's ``KMeans(algorithm="lloyd")`` so inertias are comparable:

* greedy k-means++ seeding with ``2 + int(log k)`` local trials per centre;
* Lloyd iterations stopped when the summed squared centre shift falls below
  ``tol * mean(var(x, axis=0))`` (the shift is exactly 0 when no label changes, which covers
  sklearn's "strict convergence" test);
* empty clusters are re-seeded with the points farthest from their assigned centre, the
  point being moved out of its old cluster's sum and count;
* ``n_init`` restarts, keeping the lowest inertia; in-memory ``fit`` centres the data first
  (as sklearn does) so that the ``||x||^2 - 2 x.c + ||c||^2`` distance form keeps float32
  precision.

Distances are computed in that matmul form over row chunks of ``chunk_size`` examples, so
memory stays at ``chunk_size * k`` distances whatever the number of descriptors. A Lloyd
iteration is a reduction over examples into ``LloydStats`` (per-cluster sums and counts, the
inertia and the farthest points needed for empty-cluster repair), which is what makes the
streamed variant possible: an outside loop calls ``accumulate(centers, chunk, stats)`` on every
chunk of descriptors and then ``finalize(centers, stats)``; one pass over all chunks is exactly
one full-batch Lloyd iteration, for more descriptors than fit in memory. Seeding streamed data
means running ``init`` on a sample of it.

Chunks are taken with a stride (chunk ``i`` holds rows ``i, i + n_chunks, ...``) rather than as
contiguous blocks: when ``x`` is sharded along its example axis over a ``Mesh`` every chunk
then stays spread over all devices, so the scan over chunks runs data-parallel.
"""
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
DEFAULT_CHUNK_SIZE = 8192


class KMeansResult(NamedTuple):
  centers: jax.Array  # (k, D)
  inertia: jax.Array  # () sum of squared distances to the closest centre
  n_iter: jax.Array   # () Lloyd iterations run


class LloydStats(NamedTuple):
  """Sufficient statistics of one Lloyd iteration, accumulated over chunks.

  ``far_*`` keep the ``k`` points farthest from their assigned centre seen so far (distance
  -1 marks an unused slot), which is all empty-cluster repair needs.
  """
  sums: jax.Array         # (k, D)
  counts: jax.Array       # (k,) int32, exact however many descriptors are streamed
  inertia: jax.Array      # ()
  far_sq_dist: jax.Array  # (k,) descending
  far_points: jax.Array   # (k, D)
  far_labels: jax.Array   # (k,)


def _sq_dist(x, x_sq, centers):
  c_sq = jnp.sum(centers * centers, axis=-1)
  cross = jnp.dot(x, centers.T, precision=_HIGHEST)
  return jnp.maximum(x_sq[:, None] - 2.0 * cross + c_sq[None, :], 0.0)


def _nearest(dist):
  """Per row of ``dist``, ``(first index of the minimum, the minimum)``: ``argmin``'s labels.

  Two plain reductions (the minimum, then the smallest index holding it) instead of
  ``argmin``'s paired value-index reduction, which XLA:CPU runs as slowly as the distance
  matmul itself: 20,000 x 256 distances took 12 ms by ``argmin``, 4 ms this way.
  """
  min_dist = jnp.min(dist, axis=1)
  index = jnp.arange(dist.shape[1], dtype=jnp.int32)
  labels = jnp.min(jnp.where(dist == min_dist[:, None], index, dist.shape[1]), axis=1)
  return labels, min_dist


class _Strided(NamedTuple):
  """Rows ``(N, D)``, their squared norms and mask, padded and viewed as ``(chunk, n_chunks,
  ...)``, so that chunk ``i`` is ``[:, i]`` (rows ``i, i + n_chunks, ...``).

  The view is a reshape, not a copy: each loop iteration slices its chunk. Stacking the
  chunks up front instead (a transposing copy of all rows) took 15 ms of the 39 ms that
  ``assign`` needed on 25,088 x 512 descriptors; slicing per chunk, ``assign`` takes 7.5 ms.
  The squared norms are computed once here, not in every Lloyd pass.
  """
  rows: jax.Array
  sq_norms: jax.Array
  mask: jax.Array

  @property
  def n_chunks(self) -> int:
    return self.rows.shape[1]

  def chunk(self, i):
    """``(rows, squared norms, mask)`` of chunk ``i``."""
    return tuple(jax.lax.dynamic_index_in_dim(a, i, axis=1, keepdims=False) for a in self)


def cluster_sums(x: jax.Array, labels: jax.Array, num_segments: int,
                 mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(sums, counts)`` of the rows of ``x`` per label in ``[0, num_segments)``; rows where
  ``mask`` is False count nowhere.

  A scatter-add rather than a one-hot matmul: the same sums (each a sum of the same rows)
  at a quarter of the cost (k-means on 20,000 x 512, 10 iterations, k = 64: 0.22 -> 0.16 s;
  k = 256: 0.33 -> 0.25 s). Masked rows get the out-of-range label ``num_segments``, which
  ``segment_sum`` drops.
  """
  if mask is not None:
    labels = jnp.where(mask, labels, num_segments)
  sums = jax.ops.segment_sum(x, labels, num_segments=num_segments)
  counts = jax.ops.segment_sum(jnp.ones_like(labels), labels, num_segments=num_segments)
  return sums, counts


def _strided(x, mask, chunk_size) -> _Strided:
  n = x.shape[0]
  n_chunks = max(1, -(-n // chunk_size))
  chunk = -(-n // n_chunks)
  pad = n_chunks * chunk - n

  def view(a):
    a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
    return a.reshape((chunk, n_chunks) + a.shape[1:])

  return _Strided(view(x), view(jnp.sum(x * x, axis=-1)), view(mask))


def _unstride(a, n):
  """The inverse of the strided layout for per-chunk outputs stacked as ``(n_chunks, chunk)``."""
  return jnp.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:])[:n]


def _empty_stats(k, d, dtype):
  return LloydStats(sums=jnp.zeros((k, d), dtype), counts=jnp.zeros((k,), jnp.int32),
                    inertia=jnp.zeros((), dtype), far_sq_dist=-jnp.ones((k,), dtype),
                    far_points=jnp.zeros((k, d), dtype), far_labels=jnp.zeros((k,), jnp.int32))


def _accumulate_chunk(centers, stats, x, x_sq, mask, track_far):
  k = centers.shape[0]
  dist = _sq_dist(x, x_sq, centers)
  labels, min_dist = _nearest(dist)
  sums, counts = cluster_sums(x, labels, k, mask)
  stats = stats._replace(sums=stats.sums + sums, counts=stats.counts + counts,
                         inertia=stats.inertia + jnp.sum(jnp.where(mask, min_dist, 0.0)))
  if not track_far:
    return stats
  # Farthest points: this chunk's top candidates, then merged with the running ones.
  chunk_far, chunk_idx = jax.lax.top_k(jnp.where(mask, min_dist, -1.0), min(k, x.shape[0]))
  far_dist, far_idx = jax.lax.top_k(jnp.concatenate([stats.far_sq_dist, chunk_far]), k)
  far_points = jnp.concatenate([stats.far_points, x[chunk_idx]])[far_idx]
  far_labels = jnp.concatenate([stats.far_labels, labels[chunk_idx]])[far_idx]
  return stats._replace(far_sq_dist=far_dist, far_points=far_points, far_labels=far_labels)


def _lloyd_pass(centers, stats, data: _Strided, track_far=True):
  def body(s, i):
    return _accumulate_chunk(centers, s, *data.chunk(i), track_far), None

  stats, _ = jax.lax.scan(body, stats, jnp.arange(data.n_chunks))
  return stats


def _iteration_stats(centers, data: _Strided) -> LloydStats:
  """The statistics of one full Lloyd pass over ``data``.

  The farthest points matter only to empty-cluster repair, and keeping them costs a top-k
  per chunk (about a quarter of a pass at k = 64), so the pass runs without them and is
  repeated with them in the rare iteration that leaves a cluster empty.
  """
  lloyd_pass = functools.partial(
      _lloyd_pass, centers, _empty_stats(*centers.shape, data.rows.dtype), data)
  stats = lloyd_pass(track_far=False)
  return jax.lax.cond(jnp.any(stats.counts == 0), lambda: lloyd_pass(track_far=True),
                      lambda: stats)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def lloyd_iteration(centers: jax.Array, x: jax.Array, *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
  """One full-batch Lloyd iteration on in-memory ``x``: ``(new_centers, shift)`` as
  ``finalize`` returns them (the step a resumable loop saves after, as ``fit`` runs it)."""
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)
  return finalize(centers, _iteration_stats(centers, data))


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def accumulate(centers: jax.Array, chunk: jax.Array, stats: LloydStats | None = None, *,
               mask: jax.Array | None = None,
               chunk_size: int = DEFAULT_CHUNK_SIZE) -> LloydStats:
  """Adds one chunk of descriptors ``(n, D)`` to the running Lloyd statistics.

  ``mask`` (``(n,)`` bool) drops padded rows, so a ragged last chunk can be padded to the
  common shape and reuse the compiled function.
  """
  k, d = centers.shape
  if stats is None:
    stats = _empty_stats(k, d, chunk.dtype)
  if mask is None:
    mask = jnp.ones(chunk.shape[:1], bool)
  return _lloyd_pass(centers, stats, _strided(chunk, mask, chunk_size))


@jax.jit
def finalize(centers: jax.Array, stats: LloydStats) -> tuple[jax.Array, jax.Array]:
  """Closes a Lloyd iteration: repairs empty clusters, returns ``(new_centers, shift)``.

  The ``j``-th empty cluster (in index order) receives the ``j``-th farthest point, which
  leaves its old cluster, as in sklearn's ``_relocate_empty_clusters_dense``. ``shift`` is
  ``sum_j ||new_j - old_j||^2``; sklearn stops once it is ``<= tol * mean(var(x, 0))``.
  A cluster still empty afterwards (fewer points than clusters) keeps its old centre.
  """
  k = centers.shape[0]
  empty = stats.counts == 0
  rank = jnp.where(empty, jnp.cumsum(empty) - 1, 0)
  moved = empty & (stats.far_sq_dist[rank] >= 0)
  points = jnp.where(moved[:, None], stats.far_points[rank], 0.0)
  donors = stats.far_labels[rank]
  sums = jnp.where(moved[:, None], points, stats.sums)
  counts = jnp.where(moved, 1, stats.counts)
  sums = sums - jax.ops.segment_sum(points, donors, num_segments=k)
  counts = counts - jax.ops.segment_sum(moved.astype(jnp.int32), donors, num_segments=k)
  safe_counts = jnp.maximum(counts, 1).astype(sums.dtype)
  new_centers = jnp.where(counts[:, None] > 0, sums / safe_counts[:, None], centers)
  return new_centers, jnp.sum(jnp.square(new_centers - centers))


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


@functools.partial(jax.jit, static_argnames=("k",))
def init(x: jax.Array, k: int, *, key: jax.Array) -> jax.Array:
  """Greedy k-means++ seeding (sklearn's ``_kmeans_plusplus``) of ``k`` centres from ``x``."""
  return _kmeans_plusplus(x, jnp.sum(x * x, axis=-1), k, key)


@functools.partial(jax.jit, static_argnames=("k", "n_init", "max_iter", "chunk_size"))
def _fit(x, key, init_centers, tol, *, k, n_init, max_iter, chunk_size):
  mean = jnp.mean(x, axis=0)
  x = x - mean
  tol_abs = tol * jnp.mean(jnp.var(x, axis=0))
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)

  def one_run(run_key):
    if init_centers is None:
      centers = _kmeans_plusplus(x, jnp.sum(x * x, axis=-1), k, run_key)
    else:
      centers = init_centers - mean

    def cond(carry):
      _, shift, it = carry
      return (it < max_iter) & (shift > tol_abs)

    def body(carry):
      centers, _, it = carry
      new_centers, shift = finalize(centers, _iteration_stats(centers, data))
      return new_centers, shift, it + 1

    centers, _, n_iter = jax.lax.while_loop(
        cond, body, (centers, jnp.asarray(jnp.inf, x.dtype), jnp.zeros((), jnp.int32)))
    final = _lloyd_pass(centers, _empty_stats(k, x.shape[1], x.dtype), data, track_far=False)
    return KMeansResult(centers + mean, final.inertia, n_iter)

  results = jax.lax.map(one_run, jax.random.split(key, n_init))
  best = jnp.argmin(results.inertia)
  return jax.tree.map(lambda a: a[best], results)


def fit(x: jax.Array, k: int, *, key: jax.Array, n_init: int = 1, max_iter: int = 300,
        tol: float = 1e-4, init_centers: jax.Array | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE) -> KMeansResult:
  """In-memory k-means on ``x`` ``(N, D)``; the best of ``n_init`` k-means++ restarts.

  Each run stops after ``max_iter`` Lloyd iterations or once the squared centre shift is at
  most ``tol * mean(var(x, axis=0))``. ``init_centers`` ``(k, D)`` replaces the seeding (and,
  as in sklearn, implies a single run). ``inertia`` is that of the returned centres.
  """
  if init_centers is not None:
    n_init = 1
  return _fit(x, key, init_centers, tol, k=k, n_init=n_init, max_iter=max_iter,
              chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def assign(centers: jax.Array, x: jax.Array, *,
           chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
  """Closest centre of every row of ``x``: ``(labels, squared distances)``, both ``(N,)``."""
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)

  def one_chunk(i):
    chunk, sq_norms, _ = data.chunk(i)
    return _nearest(_sq_dist(chunk, sq_norms, centers))

  labels, sq_dist = jax.lax.map(one_chunk, jnp.arange(data.n_chunks))
  return _unstride(labels, x.shape[0]), _unstride(sq_dist, x.shape[0])


def inertia(centers: jax.Array, x: jax.Array, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
  """Sum of squared distances of the rows of ``x`` to their closest centre."""
  return jnp.sum(assign(centers, x, chunk_size=chunk_size)[1])
