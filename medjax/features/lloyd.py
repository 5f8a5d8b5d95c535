"""The Lloyd pass of :mod:`medjax.features.kmeans`: distances in the matmul form over
strided row chunks, cluster sums and counts, and sklearn's empty-cluster repair.

Package-private: :mod:`kmeans` (the driver users call), :mod:`hamerly` (the pruned step) and
:mod:`vlad` (``cluster_sums``) import these pieces from here.
"""
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from medjax import kernels

_HIGHEST = jax.lax.Precision.HIGHEST


class LloydStats(NamedTuple):
  """Sufficient statistics of one Lloyd iteration, accumulated over row chunks.

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
  matmul itself (docs/performance.md).
  """
  min_dist = jnp.min(dist, axis=1)
  index = jnp.arange(dist.shape[1], dtype=jnp.int32)
  labels = jnp.min(jnp.where(dist == min_dist[:, None], index, dist.shape[1]), axis=1)
  return labels, min_dist


class _Strided(NamedTuple):
  """Rows ``(N, D)`` as given (zero-padded to a whole number of chunks only when the chunk
  length does not divide ``N``), with their squared norms and mask viewed as ``(chunk,
  n_chunks)``, so that chunk ``i`` is rows ``i, i + n_chunks, ...``, and the ``offset``
  ``(D,)`` every row is taken relative to (k-means centres its data).

  Each chunk is sliced from a reshape of the rows made inside the program that loops, and
  offset as it is sliced: nothing is copied. A centred or re-laid copy of every row, made
  up front, costs more than the pass that reads it (at 200,000 x 512 one fresh 400 MB
  buffer, faulted in page by page; docs/performance.md). The squared norms (of the offset
  rows) are computed once, not in every Lloyd pass.
  """
  rows: jax.Array
  sq_norms: jax.Array
  mask: jax.Array
  offset: jax.Array

  @property
  def n_chunks(self) -> int:
    return self.sq_norms.shape[1]

  def chunk(self, i):
    """``(offset rows, squared norms, mask)`` of chunk ``i``."""
    rows = strided_view(self.rows, *self.sq_norms.shape)
    rows, sq_norms, mask = (chunk_of(a, i) for a in (rows, self.sq_norms, self.mask))
    return rows - self.offset, sq_norms, mask


def cluster_sums(x: jax.Array, labels: jax.Array, num_segments: int,
                 mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``(sums, counts)`` of the rows of ``x`` per label in ``[0, num_segments)``; rows where
  ``mask`` is False count nowhere.

  A scatter-add rather than a one-hot matmul: the same sums (each a sum of the same rows)
  for less work. Masked rows get the out-of-range label ``num_segments``, which
  ``segment_sum`` drops.
  """
  if mask is not None:
    labels = jnp.where(mask, labels, num_segments)
  sums = jax.ops.segment_sum(x, labels, num_segments=num_segments)
  counts = jax.ops.segment_sum(jnp.ones_like(labels), labels, num_segments=num_segments)
  return sums, counts


def chunk_length(n: int, wanted: int) -> int:
  """A divisor of ``n`` between ``wanted / 2`` and ``wanted`` if there is one (so that
  chunks of it cover ``n`` with no padding, which would copy every row), else ``wanted``;
  at most ``n``."""
  wanted = min(wanted, n)
  return next((p for p in range(wanted, (wanted + 1) // 2 - 1, -1) if n % p == 0), wanted)


def strided_shape(n: int, wanted: int) -> tuple[int, int]:
  """``(chunk, n_chunks)`` of the strided layout of ``n`` rows in chunks of about ``wanted``:
  the fewest chunks :func:`chunk_length` allows, each as short as that count allows."""
  n_chunks = max(1, -(-n // chunk_length(n, wanted)))
  return -(-n // n_chunks), n_chunks


def strided_view(a, chunk: int, n_chunks: int):
  """``a`` ``(N, ...)`` padded to ``chunk * n_chunks`` rows and viewed as ``(chunk, n_chunks,
  ...)``, so chunk ``i`` (:func:`chunk_of`) is rows ``i, i + n_chunks, ...``: a reshape, not a
  copy, unless it pads, and its leading axis is what a batch sharding splits."""
  return jnp.reshape(_pad_rows(a, chunk * n_chunks), (chunk, n_chunks) + a.shape[1:])


def _pad_rows(a, rows: int):
  pad = rows - a.shape[0]  # Padding rows (mask False) count nowhere, whatever their values.
  return jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) if pad else a


def chunk_of(view, i):
  """Chunk ``i`` ``(chunk, ...)`` of a :func:`strided_view`."""
  return jax.lax.dynamic_index_in_dim(view, i, axis=1, keepdims=False)


def unstride(a, n):
  """The inverse of the strided layout for per-chunk outputs stacked as ``(n_chunks, chunk,
  ...)``: the first ``n`` rows in their original order."""
  return jnp.swapaxes(a, 0, 1).reshape((-1,) + a.shape[2:])[:n]


def _strided(x, mask, chunk_size, offset=None) -> _Strided:
  """The layout of ``x`` with ``mask`` in chunks of about ``chunk_size`` rows. Called outside
  a jit (as ``kmeans._prepare`` does), ``x`` itself is what the layout holds; a jitted
  program returning the layout would return a copy of it."""
  chunk, n_chunks = strided_shape(x.shape[0], chunk_size)
  offset = jnp.zeros(x.shape[1:], x.dtype) if offset is None else offset
  rows = _pad_rows(jnp.asarray(x), chunk * n_chunks)
  return _Strided(rows, *_strided_norms(x, mask, offset, chunk, n_chunks), offset)


@functools.partial(jax.jit, static_argnames=("chunk", "n_chunks"))
def _strided_norms(x, mask, offset, chunk, n_chunks):
  """Squared norms of the offset rows and the mask, in the strided layout."""
  return (strided_view(jnp.sum(jnp.square(x - offset), axis=-1), chunk, n_chunks),
          strided_view(mask, chunk, n_chunks))


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


@kernels.jit
def _lloyd_step(centers, data: _Strided):
  """``(new centres, shift, inertia of the given centres)``: the inertia comes free with
  the pass, and when the shift is exactly 0 it is that of the new centres too."""
  stats = _iteration_stats(centers, data)
  return (*finalize(centers, stats), stats.inertia)


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
