"""The retrieval index: exact search, the faiss plan, memory-mapped load, append in place."""
import json

import numpy as np
import pytest

from medjax.retrieval import index as index_lib
from medjax.retrieval import search


def clustered(n, d=32, modes=20, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(modes, d))
  return (centres[rng.integers(0, modes, n)] + 0.4 * rng.normal(size=(n, d))).astype(np.float32)


def brute_force(queries, x, k):
  q, x = search.l2_normalize(queries), search.l2_normalize(x)
  return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


def test_exact_search_is_cosine_top_k_with_euclidean_distances(tmp_path):
  x = clustered(300)
  index = index_lib.create(tmp_path, x * np.arange(1, 301)[:, None], np.zeros(300, int),
                           [f"i{i}" for i in range(300)])  # Scale must not matter: cosine.
  rows, dist = index.search(x[:7], 5)
  np.testing.assert_array_equal(rows, brute_force(x[:7], x, 5))
  sims = np.sum(search.l2_normalize(x[:7])[:, None] * search.l2_normalize(x)[rows], -1)
  np.testing.assert_allclose(dist, np.sqrt(np.maximum(2 - 2 * sims, 0)), atol=1e-3)
  assert (np.diff(dist, axis=1) >= 0).all() and not index.approximate


def test_saved_as_plain_npy_and_memory_mapped(tmp_path):
  index_lib.create(tmp_path, clustered(10), np.arange(10) % 2, [f"i{i}" for i in range(10)],
                   [f"/img/{i}.png" for i in range(10)], ("a", "b"))
  emb = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
  assert isinstance(emb, np.memmap) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
  loaded = index_lib.load(tmp_path)
  assert isinstance(loaded.embeddings, np.memmap)
  assert loaded.paths[3] == "/img/3.png" and loaded.meta["class_names"] == ["a", "b"]


def test_append_extends_files_in_place_and_crosses_into_approximate(tmp_path):
  x = clustered(1200)
  index = index_lib.create(tmp_path, x[:1000], np.zeros(1000, int), [f"i{i}" for i in range(1000)],
                           approximate_above=1100)
  header = (tmp_path / "embeddings.npy").read_bytes()[:128]
  index = index.append(x[1000:1050], np.ones(50, int), [f"new_longer_id_{i}" for i in range(50)],
                       [f"/p/{i}" for i in range(50)])
  assert len(index) == 1050 and not index.approximate
  # Same header length, rows appended: the first rows' bytes are untouched.
  assert (tmp_path / "embeddings.npy").read_bytes()[:128] != header  # shape grew
  np.testing.assert_array_equal(index.embeddings[:1000], search.l2_normalize(x[:1000]))
  assert index.ids[1049] == "new_longer_id_49" and index.paths[0] == "" and index.labels[1049] == 1
  with pytest.raises(ValueError, match="already indexed"):
    index.append(x[:1], [0], ["i0"])
  index = index.append(x[1050:], np.ones(150, int), [f"m{i}" for i in range(150)])
  assert index.approximate and len(index) == 1200
  spec = json.loads((tmp_path / "index.json").read_text())["approximate"]
  assert spec["kind"] == "ivf_flat" and spec["tuned_recall_at_10"] >= search.RECALL_TARGET
  # Further appends go into the trained faiss index without retraining.
  index = index.append(clustered(20, seed=5), np.zeros(20, int), [f"z{i}" for i in range(20)])
  assert index.faiss_index.ntotal == 1220 and len(index) == 1220
  q = clustered(20, seed=5)[:3]
  rows, _ = index.search(q, 1)
  assert [index.ids[r] for r in rows[:, 0]] == ["z0", "z1", "z2"]


def test_a_crash_mid_append_leaves_the_index_as_it_was(tmp_path):
  index = index_lib.create(tmp_path, clustered(20), np.zeros(20, int), [f"i{i}" for i in range(20)])
  # Rows written past the recorded size (the meta file was not updated) are ignored...
  index_lib._append_npy(tmp_path / "embeddings.npy", search.l2_normalize(clustered(5, seed=1)), 20)
  assert len(index_lib.load(tmp_path)) == 20
  # ... and overwritten by the next append.
  index = index_lib.load(tmp_path).append(clustered(2, seed=2), [0, 0], ["a", "b"])
  assert index.embeddings.shape == (22, 32)
  np.testing.assert_allclose(index.embeddings[20:], search.l2_normalize(clustered(2, seed=2)))


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_approximate_kinds_reach_the_recall_target(tmp_path, kind):
  x = clustered(2050, d=32)
  index = index_lib.create(tmp_path, x[:2000], np.zeros(2000, int), [str(i) for i in range(2000)],
                           approximate_above=1000, kind=kind)
  assert index.meta["approximate"]["kind"] == kind
  q = x[2000:]  # New points of the same distribution.
  found, _ = index.search(q, 10)
  truth, _ = index.search(q, 10, exact=True)
  assert search.recall_at(found, truth) >= 0.9


def test_plan_rule():
  small = search.plan(1_000_000, 512, budget=32 << 30)
  assert small["kind"] == "ivf_flat" and small["nlist"] == 1024 and small["train_points"] == 40960
  tight = search.plan(1_000_000, 512, budget=2 << 30)  # 2 GB of vectors > half of 2 GB.
  assert tight["kind"] == "ivf_pq" and tight["pq_m"] == 64
  assert search.plan(100_000_000, 512, budget=64 << 30)["nlist"] == 8192
  with pytest.raises(ValueError, match="kind"):
    search.plan(10, 4, kind="lsh")
