"""Hamerly's (2010) exact acceleration of a Lloyd step, for :mod:`medjax.features.kmeans`.

Per row an upper bound on the distance to its centre and a lower bound on the distance to
any other, moved by the centres' shifts, prove most rows' labels unchanged once the centres
settle; only the other rows are measured, and the cluster sums are updated by the rows that
change cluster. The labels are Lloyd's, so :func:`kmeans.fit` takes the same iterations.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from medjax import kernels
from medjax.features.lloyd import (_Strided, _empty_stats, _lloyd_pass, _nearest, _sq_dist,
                                   cluster_sums, finalize)


@kernels.jit
def _labelled_inertia(centers, data: _Strided, labels):
  """``(whether every row has a label, the inertia of ``centers`` given those labels)``,
  the labels being each row's nearest centre (flat padded order, as :class:`Bounds` keeps
  them): one pass of differences, no distance product. The check is in the same program so
  that the driver compiles nothing else for it."""
  labelled = jnp.all((labels < centers.shape[0]) | ~data.mask.reshape(-1))
  labels = labels.reshape(data.mask.shape)

  def one_chunk(i):
    rows, _, mask = data.chunk(i)
    near = centers[jnp.minimum(labels[:, i], centers.shape[0] - 1)]
    return jnp.sum(jnp.where(mask, jnp.sum(jnp.square(rows - near), axis=-1), 0.0))

  return labelled, jnp.sum(jax.lax.map(one_chunk, jnp.arange(data.n_chunks)))


class Bounds(NamedTuple):
  """Hamerly's bounds per padded row of the strided data (in its flat, original order),
  with the cluster sums of the labels they hold.

  ``upper`` is at least the distance to the row's centre ``labels``, ``lower`` at most its
  distance to any other centre; a row with ``upper <= max(lower, half the gap from its
  centre to the nearest other one)`` keeps its centre (triangle inequality) and is not
  measured again. Label ``k`` (no centre) with ``upper = inf`` marks a row not measured
  yet. ``sums`` and ``counts`` are updated by the rows that change centre, so a step costs
  what its measured rows cost.
  """
  labels: jax.Array
  upper: jax.Array
  lower: jax.Array
  sums: jax.Array
  counts: jax.Array


def fresh_bounds(data: _Strided, k: int) -> Bounds:
  """Bounds that make the next step measure every row (the first step, a resumed fit)."""
  n, d = data.mask.size, data.rows.shape[-1]
  dtype = data.rows.dtype
  return Bounds(jnp.full((n,), k, jnp.int32), jnp.full((n,), jnp.inf, dtype),
                jnp.zeros((n,), dtype), jnp.zeros((k, d), dtype), jnp.zeros((k,), jnp.int32))


# Float32 round-off allowance of a squared distance in the matmul form, relative to the
# squared norms involved: bounds are widened by it so that a row is skipped only when its
# centre cannot have changed whatever the rounding.
_ROUND_OFF = 1e-5


def _half_gaps(centers):
  """Half the distance from each centre to its nearest other centre, rounded down."""
  c_sq = jnp.sum(centers * centers, axis=-1)
  d2 = _sq_dist(centers, c_sq, centers) - _ROUND_OFF * 2.0 * jnp.max(c_sq)
  d2 = jnp.where(jnp.eye(centers.shape[0], dtype=bool), jnp.inf, d2)
  return 0.5 * jnp.sqrt(jnp.maximum(jnp.min(d2, axis=1), 0.0))


def _measure(centers, x, offset, x_sq, bounds: Bounds, need, chunk_size) -> Bounds:
  """``bounds`` with the rows of ``x - offset`` where ``need`` holds measured against every
  centre, in chunks of ``chunk_size`` gathered rows (only as many chunks as there are such
  rows); the rows that change centre move their sums and counts."""
  n, k = need.shape[0], centers.shape[0]
  index = jnp.nonzero(need, size=-(-n // chunk_size) * chunk_size, fill_value=n)[0]
  c_sq_max = jnp.max(jnp.sum(centers * centers, axis=-1))

  def measure_chunk(i, bounds):
    rows = jax.lax.dynamic_slice_in_dim(index, i * chunk_size, chunk_size)
    x_rows = jnp.take(x, rows, axis=0, mode="fill", fill_value=0) - offset
    sq = jnp.take(x_sq, rows, mode="fill", fill_value=0)
    old = jnp.take(bounds.labels, rows, mode="fill", fill_value=k)
    dist = _sq_dist(x_rows, sq, centers)
    labels, first = _nearest(dist)
    second = jnp.min(jnp.where(jnp.arange(k) == labels[:, None], jnp.inf, dist), axis=1)
    slack = _ROUND_OFF * (sq + c_sq_max)
    moved = (rows < n) & (labels != old)
    gained, joined = cluster_sums(x_rows, labels, k, moved)
    lost, left = cluster_sums(x_rows, old, k, moved)
    return Bounds(bounds.labels.at[rows].set(labels, mode="drop"),
                  bounds.upper.at[rows].set(jnp.sqrt(first + slack), mode="drop"),
                  bounds.lower.at[rows].set(jnp.sqrt(jnp.maximum(second - slack, 0.0)),
                                            mode="drop"),
                  bounds.sums + gained - lost, bounds.counts + joined - left)

  todo = -(-jnp.sum(need, dtype=jnp.int32) // chunk_size)
  return jax.lax.fori_loop(0, todo, measure_chunk, bounds)


def _moved_bounds(bounds: Bounds, old, new) -> Bounds:
  """Bounds still valid after the centres move from ``old`` to ``new``: a row's upper
  bound grows by its centre's move, its lower bound shrinks by the largest move of any
  other centre."""
  moves = jnp.sqrt(jnp.sum(jnp.square(new - old), axis=-1))
  which = jnp.argmax(moves)
  second = jnp.max(jnp.where(jnp.arange(moves.shape[0]) == which, 0.0, moves))
  labels = jnp.minimum(bounds.labels, moves.shape[0] - 1)  # Unmeasured rows: upper is inf.
  others = jnp.where(labels == which, second, moves[which])
  return bounds._replace(upper=bounds.upper + moves[labels],
                         lower=jnp.maximum(bounds.lower - others, 0.0))


def _unsettled(centers, data: _Strided, bounds: Bounds):
  """Per padded row, whether its bounds leave room for a centre other than its own to be
  the nearest (always, for a row not measured yet)."""
  gaps = _half_gaps(centers)[jnp.minimum(bounds.labels, centers.shape[0] - 1)]
  return data.mask.reshape(-1) & (bounds.upper > jnp.maximum(bounds.lower, gaps))


@kernels.jit
def _pruned_step(centers, data: _Strided, bounds: Bounds):
  """``(new centres, shift, bounds for the new centres)``: the Lloyd step of
  :func:`_lloyd_step` (the same labels, hence the same centres up to the order the sums
  are added in) measuring only the rows whose bounds allow their centre to have changed
  (Hamerly 2010). A step that leaves a cluster empty is redone as the full tracking pass,
  whose relocations the bounds do not follow, so they start afresh."""
  k, d = centers.shape
  x, x_sq = data.rows, data.sq_norms.reshape(-1)
  # Measured rows are gathered in chunks as long as the layout's own.
  bounds = _measure(centers, x, data.offset, x_sq, bounds, _unsettled(centers, data, bounds),
                    data.sq_norms.shape[0])

  def relocate():
    stats = _lloyd_pass(centers, _empty_stats(k, d, x.dtype), data, track_far=True)
    return (*finalize(centers, stats), fresh_bounds(data, k))

  def keep():
    stats = _empty_stats(k, d, x.dtype)._replace(sums=bounds.sums, counts=bounds.counts)
    new, shift = finalize(centers, stats)
    return new, shift, _moved_bounds(bounds, centers, new)

  return jax.lax.cond(jnp.any(bounds.counts == 0), relocate, keep)
