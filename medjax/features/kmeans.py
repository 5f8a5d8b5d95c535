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

_HIGHEST = jax.lax.Precision.HIGHEST
# Small enough that a chunk's (chunk, k) distances stay in the L2 cache.
DEFAULT_CHUNK_SIZE = 2048


class KMeansResult(NamedTuple):
  centers: np.ndarray  # (k, D)
  inertia: float       # sum of squared distances to the closest centre
  n_iter: int          # Lloyd iterations run
  converged: bool      # the shift test passed before max_iter


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
  """Rows ``(N, D)``, their squared norms and mask, padded and viewed as ``(chunk, n_chunks,
  ...)``, so that chunk ``i`` is ``[:, i]`` (rows ``i, i + n_chunks, ...``).

  The view is a reshape, not a copy: each loop iteration slices its chunk, where stacking
  the chunks up front would copy every row. The squared norms are computed once here, not
  in every Lloyd pass.
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
  for less work. Masked rows get the out-of-range label ``num_segments``, which
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


@functools.partial(kernels.jit, static_argnames=("chunk_size",))
def lloyd_iteration(centers: jax.Array, x: jax.Array, *,
                    chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[jax.Array, jax.Array]:
  """One full-batch Lloyd iteration on ``x``: ``(new_centers, shift)`` as ``finalize``
  returns them (the step ``fit`` saves its progress after)."""
  data = _strided(x, jnp.ones(x.shape[:1], bool), chunk_size)
  return finalize(centers, _iteration_stats(centers, data))


@functools.partial(kernels.jit, static_argnames=("chunk_size",))
def _prepare(x, *, chunk_size: int):
  """``(strided layout of the centred x, mean, mean per-feature variance)`` in one program
  on the device: the layout and squared norms are made once per fit, not once per pass,
  and nothing is copied to the host."""
  mean = jnp.mean(x, axis=0)
  data = _strided(x - mean, jnp.ones(x.shape[:1], bool), chunk_size)
  # The centred rows' mean is zero, so their variance is the mean square: no extra pass.
  return data, mean, jnp.sum(data.sq_norms) / x.size


def _rows(data: _Strided, n: int):
  """The first ``n`` rows and squared norms of ``data`` in their original order: the
  strided view is a reshape of the padded rows, so this is one too."""
  return data.rows.reshape((-1, data.rows.shape[-1]))[:n], data.sq_norms.reshape(-1)[:n]


@functools.partial(kernels.jit, static_argnames=("k", "n"))
def _init_strided(data: _Strided, k: int, n: int, key):
  return _kmeans_plusplus(*_rows(data, n), k, key)


@kernels.jit
def _strided_inertia(centers, data: _Strided):
  def one_chunk(i):
    chunk, sq_norms, mask = data.chunk(i)
    return jnp.sum(jnp.where(mask, _nearest(_sq_dist(chunk, sq_norms, centers))[1], 0.0))

  return jnp.sum(jax.lax.map(one_chunk, jnp.arange(data.n_chunks)))


@kernels.jit
def _labelled_inertia(centers, data: _Strided, labels):
  """The inertia of ``centers`` given every row's nearest centre (flat padded order, as
  :class:`Bounds` keeps them): one pass of differences, no distance product."""
  labels = labels.reshape(data.mask.shape)

  def one_chunk(i):
    rows, _, mask = data.chunk(i)
    near = centers[jnp.minimum(labels[:, i], centers.shape[0] - 1)]
    return jnp.sum(jnp.where(mask, jnp.sum(jnp.square(rows - near), axis=-1), 0.0))

  return jnp.sum(jax.lax.map(one_chunk, jnp.arange(data.n_chunks)))


@kernels.jit
def _lloyd_step(centers, data: _Strided):
  """``(new centres, shift, inertia of the given centres)``: the inertia comes free with
  the pass, and when the shift is exactly 0 it is that of the new centres too."""
  stats = _iteration_stats(centers, data)
  return (*finalize(centers, stats), stats.inertia)


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


def _measure(centers, x, x_sq, bounds: Bounds, need, chunk_size) -> Bounds:
  """``bounds`` with the rows where ``need`` holds measured against every centre, in chunks
  of ``chunk_size`` gathered rows (only as many chunks as there are such rows); the rows
  that change centre move their sums and counts."""
  n, k = need.shape[0], centers.shape[0]
  index = jnp.nonzero(need, size=-(-n // chunk_size) * chunk_size, fill_value=n)[0]
  c_sq_max = jnp.max(jnp.sum(centers * centers, axis=-1))

  def measure_chunk(i, bounds):
    rows = jax.lax.dynamic_slice_in_dim(index, i * chunk_size, chunk_size)
    x_rows = jnp.take(x, rows, axis=0, mode="fill", fill_value=0)
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


@functools.partial(kernels.jit, static_argnames=("chunk_size",))
def _pruned_step(centers, data: _Strided, bounds: Bounds, *, chunk_size: int):
  """``(new centres, shift, bounds for the new centres)``: the Lloyd step of
  :func:`_lloyd_step` (the same labels, hence the same centres up to the order the sums
  are added in) measuring only the rows whose bounds allow their centre to have changed
  (Hamerly 2010). A step that leaves a cluster empty is redone as the full tracking pass,
  whose relocations the bounds do not follow, so they start afresh."""
  k, d = centers.shape
  x, x_sq = data.rows.reshape(-1, d), data.sq_norms.reshape(-1)
  bounds = _measure(centers, x, x_sq, bounds, _unsettled(centers, data, bounds), chunk_size)

  def relocate():
    stats = _lloyd_pass(centers, _empty_stats(k, d, x.dtype), data, track_far=True)
    return (*finalize(centers, stats), fresh_bounds(data, k))

  def keep():
    stats = _empty_stats(k, d, x.dtype)._replace(sums=bounds.sums, counts=bounds.counts)
    new, shift = finalize(centers, stats)
    return new, shift, _moved_bounds(bounds, centers, new)

  return jax.lax.cond(jnp.any(bounds.counts == 0), relocate, keep)


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
      centers, shift, bounds = _pruned_step(centers, data, bounds,
                                            chunk_size=data.rows.shape[0])
    iteration += 1
    shift = float(shift)
    converged = shift <= tol_abs
    known_inertia = None
    if shift == 0.0 and bounds is None:
      known_inertia = float(before)
    elif shift == 0.0 and bool(jnp.all((bounds.labels < k) | ~data.mask.reshape(-1))):
      # Unmoved centres: every row's label is its nearest centre's.
      known_inertia = float(_labelled_inertia(centers, data, bounds.labels))
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
  return _unstride(labels, x.shape[0]), _unstride(sq_dist, x.shape[0])


def inertia(centers: jax.Array, x: jax.Array, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> jax.Array:
  """Sum of squared distances of the rows of ``x`` to their closest centre."""
  return jnp.sum(assign(centers, x, chunk_size=chunk_size)[1])
