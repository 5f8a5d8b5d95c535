"""k-means against scikit-learn's KMeans, empty-cluster repair, and the resumable driver."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from medjax.features import hamerly, kmeans, lloyd
from tests.conftest import run_on_devices



@pytest.fixture(scope="module")
def blobs():
  x, _ = make_blobs(20000, 32, centers=24, cluster_std=2.0, random_state=0)
  return x.astype(np.float32)


def _tracking_stats(centers, x, chunk_size=kmeans.DEFAULT_CHUNK_SIZE):
  """One Lloyd pass that always tracks the farthest points (what empty-cluster repair reads)."""
  data = lloyd._strided(jnp.asarray(x), jnp.ones(len(x), bool), chunk_size)
  return lloyd._lloyd_pass(jnp.asarray(centers), lloyd._empty_stats(*centers.shape, jnp.float32),
                            data, track_far=True)


def _lloyd_step_numpy(centers, x):
  dist = ((x[:, None, :] - centers[None]) ** 2).sum(-1)
  labels = dist.argmin(1)
  new = np.stack([x[labels == j].mean(0) for j in range(len(centers))])
  return new, dist.min(1).sum()


@pytest.mark.parametrize("k,n_init", [(16, 1), pytest.param(64, 2, marks=pytest.mark.slow)])
def test_inertia_matches_sklearn(blobs, k, n_init):
  ref = KMeans(k, n_init=n_init, random_state=0).fit(blobs)
  ours = kmeans.fit(blobs, k, key=jax.random.key(0), n_init=n_init)
  assert float(ours.inertia) <= ref.inertia_ * 1.01
  np.testing.assert_allclose(kmeans.inertia(ours.centers, blobs), ours.inertia, rtol=1e-4)
  assert 0 < int(ours.n_iter) <= 300


def test_plusplus_seeding_spreads_over_blobs():
  x, truth = make_blobs(3000, 8, centers=10, cluster_std=0.1, center_box=(-50, 50),
                        random_state=1)
  centers = kmeans.init(x.astype(np.float32), 10, key=jax.random.key(3))
  labels, _ = kmeans.assign(centers, x.astype(np.float32))
  # Greedy k-means++ picks one seed per well separated blob.
  assert len(set(zip(labels.tolist(), truth.tolist()))) == 10


def test_duplicated_init_leaves_no_empty_cluster(blobs):
  init = np.repeat(blobs[:4], 4, axis=0)  # 16 centres, each one four times
  result = kmeans.fit(blobs, 16, key=jax.random.key(0), init_centers=init)
  labels, _ = kmeans.assign(result.centers, blobs)
  assert np.all(np.bincount(np.asarray(labels), minlength=16) > 0)


def test_empty_cluster_relocation_like_sklearn(blobs):
  x = blobs[:3000]
  init = np.concatenate([x[:6], x[:2]])  # clusters 6 and 7 duplicate 0 and 1: empty
  stats = _tracking_stats(init, x)
  ours, _ = lloyd.finalize(init, stats)
  ref = KMeans(8, init=init, n_init=1, max_iter=1, algorithm="lloyd").fit(x).cluster_centers_
  # sklearn hands the farthest points to the empty clusters in no particular order.
  dist = ((np.asarray(ours)[:, None] - ref[None]) ** 2).sum(-1)
  assert sorted(dist.argmin(1).tolist()) == list(range(8))
  assert dist.min(1).max() < 1e-6 * (ref ** 2).sum(1).max()
  # Counts include the relocated points and the donors lose them.
  assert int(jnp.sum(stats.counts)) == len(x) and int(jnp.min(stats.counts)) == 0


@pytest.mark.parametrize("empty", [False, True])
def test_lloyd_iteration_equals_the_always_tracking_pass(blobs, empty):
  """The iteration (the pass without farthest points, repeated with them only when a
  cluster empties) gives what the always-tracking pass gives."""
  x = blobs[:3000]
  init = np.concatenate([x[:6], x[:2]]) if empty else x[:8]  # duplicates come out empty
  centers, shift = kmeans.lloyd_iteration(init, x, chunk_size=1024)
  want_centers, want_shift = lloyd.finalize(init, _tracking_stats(init, x, chunk_size=1024))
  np.testing.assert_array_equal(centers, want_centers)
  assert float(shift) == float(want_shift)


def test_one_lloyd_step_matches_numpy(blobs):
  x = blobs[:5000]
  centers = np.asarray(kmeans.init(x, 12, key=jax.random.key(1)))
  got, _ = kmeans.lloyd_iteration(centers, x, chunk_size=512)
  expected, _ = _lloyd_step_numpy(centers.astype(np.float64), x.astype(np.float64))
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_fit_resumes_from_its_checkpoint(tmp_path):
  sample = np.random.default_rng(0).normal(size=(600, 5)).astype(np.float32)
  kwargs = {"key": jax.random.PRNGKey(0), "tol": 0.0}
  straight = kmeans.fit(sample, 6, max_iter=8, checkpoint=tmp_path / "a.npz", **kwargs)
  kmeans.fit(sample, 6, max_iter=3, checkpoint=tmp_path / "b.npz", **kwargs)  # "Killed".
  with np.load(tmp_path / "b.npz") as z:
    assert int(z["iteration"]) == 3
  resumed = kmeans.fit(sample, 6, max_iter=8, checkpoint=tmp_path / "b.npz", **kwargs)
  assert straight.n_iter == resumed.n_iter == 8
  np.testing.assert_array_equal(resumed.centers, straight.centers)
  # Without a checkpoint the same driver gives the same centres.
  np.testing.assert_allclose(kmeans.fit(sample, 6, max_iter=8, **kwargs).centers,
                             straight.centers, rtol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    kmeans.fit(sample, 5, max_iter=8, checkpoint=tmp_path / "b.npz", **kwargs)
  # A checkpoint without bounds (a Lloyd fit's, or another chunk layout's) resumes with
  # every row measured again: the same labels, centres equal up to round-off.
  kmeans.fit(sample, 6, max_iter=3, checkpoint=tmp_path / "c.npz", algorithm="lloyd", **kwargs)
  resumed = kmeans.fit(sample, 6, max_iter=8, checkpoint=tmp_path / "c.npz", **kwargs)
  assert resumed.n_iter == 8
  np.testing.assert_allclose(resumed.centers, straight.centers, rtol=1e-5, atol=1e-6)


def test_assign_is_chunk_size_invariant(blobs):
  centers = blobs[:10]
  labels, dist = kmeans.assign(centers, blobs[:1001], chunk_size=100)
  ref = ((blobs[:1001, None] - centers[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(labels, ref.argmin(1))
  np.testing.assert_allclose(dist, ref.min(1), rtol=1e-4, atol=1e-2)


@pytest.mark.slow
def test_sharded_examples_match_unsharded():
  script = """
      import jax, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      from medjax.features import hamerly, kmeans, lloyd
      x = np.random.default_rng(0).normal(size=(4000, 8)).astype(np.float32)
      data = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
      xs = jax.device_put(x, data)
      ref = kmeans.fit(x, 8, key=jax.random.key(0), chunk_size=1000)
      got = kmeans.fit(xs, 8, key=jax.random.key(0), chunk_size=1000)
      np.testing.assert_allclose(got.inertia, ref.inertia, rtol=1e-4)
      labels, _ = kmeans.assign(got.centers, xs, chunk_size=1000)
      np.testing.assert_array_equal(labels, kmeans.assign(got.centers, x, chunk_size=1000)[0])
      print("ok")
  """
  run_on_devices(script)


@pytest.mark.parametrize("k,init", [pytest.param(1, None, marks=pytest.mark.slow),
                                    pytest.param(2, None, marks=pytest.mark.slow),
                                    pytest.param(24, None, marks=pytest.mark.slow),
                                    (8, "duplicated")])
def test_hamerly_runs_lloyds_iterations(blobs, k, init):
  """The pruned fit takes Lloyd's path: the same number of iterations to the same fixed
  point, including through empty-cluster repair (duplicated seeds come out empty)."""
  x = blobs[:6000]
  init_centers = np.concatenate([x[:6], x[:2]]) if init == "duplicated" else None
  kwargs = {"key": jax.random.key(2), "tol": 0.0, "max_iter": 60, "chunk_size": 1000,
            "init_centers": init_centers}
  lloyd = kmeans.fit(x, k, algorithm="lloyd", **kwargs)
  hamerly = kmeans.fit(x, k, **kwargs)
  assert (hamerly.n_iter, hamerly.converged) == (lloyd.n_iter, lloyd.converged)
  np.testing.assert_allclose(hamerly.centers, lloyd.centers, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(hamerly.inertia, lloyd.inertia, rtol=1e-5)
  np.testing.assert_array_equal(kmeans.assign(hamerly.centers, x)[0],
                                kmeans.assign(lloyd.centers, x)[0])


@pytest.mark.slow
def test_hamerly_bounds_hold_and_prune(blobs):
  """After every step each measured row's upper bound is at least its distance to its
  centre and its lower bound at most its distance to any other; and once the centres
  settle most rows are no longer measured."""
  x = blobs[:5000]
  k = 12
  data = lloyd._strided(jnp.asarray(x), jnp.ones(len(x), bool), 1000)
  centers = kmeans.init(x, k, key=jax.random.key(1))
  bounds = hamerly.fresh_bounds(data, k)
  flat = np.asarray(data.rows).reshape(-1, x.shape[1])
  real = np.asarray(data.mask).reshape(-1)
  for _ in range(8):
    centers, _, bounds = hamerly._pruned_step(centers, data, bounds)
    dist = np.sqrt(((flat[:, None] - np.asarray(centers)[None]) ** 2).sum(-1))
    labels = np.asarray(bounds.labels)
    assert np.all(labels[real] < k)
    own = dist[real, labels[real]]
    dist[np.arange(len(flat)), np.minimum(labels, k - 1)] = np.inf
    assert np.all(np.asarray(bounds.upper)[real] >= own * (1 - 1e-6))
    assert np.all(np.asarray(bounds.lower)[real] <= dist[real].min(1) * (1 + 1e-6) + 1e-6)
  unsettled = np.asarray(hamerly._unsettled(centers, data, bounds))
  assert unsettled.sum() < 0.2 * len(x)


def test_unknown_algorithm_is_refused(blobs):
  with pytest.raises(ValueError, match="hamerly"):
    kmeans.fit(blobs[:100], 4, key=jax.random.key(0), algorithm="elkan")


@pytest.mark.parametrize("n, wanted, expected", [(200_000, 2048, 2000), (4096, 2048, 2048),
                                                 (1031, 2048, 1031), (3 * 1031, 2048, 1031),
                                                 (2 * 2053, 2048, 2048)])
def test_chunk_length_prefers_a_divisor(n, wanted, expected):
  assert lloyd.chunk_length(n, wanted) == expected


@pytest.mark.parametrize("n", [600, 601])
def test_layout_holds_the_rows_themselves_and_centres_each_chunk(n):
  # 600 rows split into chunks of 200 with no padding: the layout keeps x's own buffer (a
  # centred or padded copy of every row cost more than a Lloyd pass); 601 is padded.
  x = jax.device_put(np.random.default_rng(0).normal(3.0, 1.0, (n, 8)).astype(np.float32))
  data, mean, _ = kmeans._prepare(x, chunk_size=256)
  if n == 600:
    assert data.rows.unsafe_buffer_pointer() == x.unsafe_buffer_pointer()
  centred = np.asarray(x) - np.asarray(mean)
  chunk, n_chunks = data.sq_norms.shape
  for i in (0, n_chunks - 1):
    rows, sq_norms, mask = jax.jit(data.chunk)(i)
    index = np.arange(chunk) * n_chunks + i
    real = index < n
    np.testing.assert_array_equal(np.asarray(mask), real)
    np.testing.assert_allclose(np.asarray(rows)[real], centred[index[real]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sq_norms)[real], (centred[index[real]] ** 2).sum(1),
                               rtol=1e-5)
