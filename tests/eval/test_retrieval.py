"""Retrieval metrics against hand-computed rankings, and index persistence."""
import numpy as np
import pytest

from medjax.eval import retrieval


def test_map_and_precision_at_k_hand_computed():
  # Index on the unit circle; the query at angle 0 sees items in order a0, a1, b0, a2, b1.
  angles = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
  index = retrieval.build(np.stack([np.cos(angles), np.sin(angles)], 1), [0, 0, 1, 0, 1],
                          [f"i{j}" for j in range(5)])
  scores = retrieval.evaluate(np.array([[1.0, 0.0]]), np.array([0]), index, ks=(1, 3))
  # Relevant at ranks 1, 2, 4: AP = (1/1 + 2/2 + 3/4) / 3.
  assert scores["mAP"] == pytest.approx((1 + 1 + 0.75) / 3)
  assert scores["P@1"] == 1.0 and scores["P@3"] == pytest.approx(2 / 3)
  assert scores["random_mAP"] == pytest.approx(3 / 5)
  # Interpolated precision: 1.0 up to recall 2/3, then 0.75 up to recall 1.
  curve = dict(zip(np.round(scores["pr_curve/recall"], 1), scores["pr_curve/precision"]))
  assert curve[0.6] == 1.0 and curve[0.7] == 0.75 and curve[1.0] == 0.75


def test_nearest_returns_sorted_neighbours_and_multilabel_relevance():
  index = retrieval.build(np.eye(3), [0, 1, 2], ["a", "b", "c"])
  idx, dist = retrieval.nearest(np.array([[0.9, 0.1, 0.0]]), index, k=2)
  assert idx.tolist() == [[0, 1]]
  assert dist[0, 0] < dist[0, 1]
  rel = retrieval.relevance(np.array([[1, 0, 1]]), np.array([[0, 0, 1], [0, 1, 0]]))
  assert rel.tolist() == [[True, False]]


def test_index_round_trip_without_pickles(tmp_path):
  index = retrieval.build(np.random.default_rng(0).normal(size=(4, 3)), [0, 1, 0, 1],
                          ["x/1.png", "x/2.png", "y/3.png", "y/4.png"])
  index.save(tmp_path / "index.npz")
  loaded = retrieval.Index.load(tmp_path / "index.npz")
  np.testing.assert_array_equal(loaded.embeddings, index.embeddings)
  assert loaded.ids.tolist() == index.ids.tolist()


def test_pr_curve_png(tmp_path):
  scores = {"pr_curve/recall": retrieval.RECALL_LEVELS.tolist(), "pr_curve/precision": [1.0] * 11,
            "mAP": 1.0, "random_mAP": 0.5}
  retrieval.plot_pr_curve(scores, tmp_path / "pr.png", "test")
  assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
