"""Retrieval metrics against hand-computed rankings, with their bootstrap intervals."""
import numpy as np
import pytest

from medjax.eval import retrieval
from medjax.retrieval import index as index_lib


def _mean_ap_of_every_placement(relevant: int, items: int) -> float:
  import itertools
  aps = []
  for ranks in itertools.combinations(range(1, items + 1), relevant):
    aps.append(np.mean([(i + 1) / r for i, r in enumerate(ranks)]))
  return float(np.mean(aps))


def test_map_and_precision_at_k_hand_computed():
  # Index on the unit circle; the query at angle 0 sees items in order a0, a1, b0, a2, b1.
  angles = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
  index = index_lib.in_memory(np.stack([np.cos(angles), np.sin(angles)], 1), [0, 0, 1, 0, 1],
                              [f"i{j}" for j in range(5)])
  scores = retrieval.evaluate(np.array([[1.0, 0.0]]), np.array([0]), index, ks=(1, 3))
  # Relevant at ranks 1, 2, 4: AP = (1/1 + 2/2 + 3/4) / 3.
  assert scores["mAP"] == pytest.approx((1 + 1 + 0.75) / 3)
  assert scores["P@1"] == 1.0 and scores["P@3"] == pytest.approx(2 / 3)
  # A random ranking's expected AP, over all C(5, 3) placements of the relevant items.
  assert scores["random_mAP"] == pytest.approx(_mean_ap_of_every_placement(3, 5))
  # Interpolated precision: 1.0 up to recall 2/3, then 0.75 up to recall 1.
  curve = dict(zip(np.round(scores["pr_curve/recall"], 1), scores["pr_curve/precision"]))
  assert curve[0.6] == 1.0 and curve[0.7] == 0.75 and curve[1.0] == 0.75
  # One query: every resample is that query, so the intervals collapse onto the values.
  assert scores["mAP/ci95_low"] == pytest.approx(scores["mAP"])
  assert scores["pr_curve/precision/ci95_high"] == pytest.approx(scores["pr_curve/precision"])


def test_intervals_bracket_the_estimates_and_match_the_bootstrap_by_hand():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 60)
  centres = rng.normal(size=(3, 8))
  x = centres[labels] + rng.normal(size=(60, 8))
  index = index_lib.in_memory(x[:40], labels[:40], [str(i) for i in range(40)])
  scores = retrieval.evaluate(x[40:], labels[40:], index, resamples=200)
  for key in ("P@1", "P@5", "P@10", "mAP"):
    assert scores[f"{key}/ci95_low"] <= scores[key] <= scores[f"{key}/ci95_high"], key
    assert scores[f"{key}/ci95_low"] < scores[f"{key}/ci95_high"], key
  low, high = scores["pr_curve/precision/ci95_low"], scores["pr_curve/precision/ci95_high"]
  assert all(lo <= p <= hi + 1e-12 for lo, p, hi in zip(low, scores["pr_curve/precision"], high))
  # P@10 by hand: the same stratified resamples over the per-query values.
  from medjax.eval import bootstrap
  per = retrieval.per_query(x[40:], labels[40:], index)["P@10"]
  values = np.concatenate([w @ per / len(per)
                           for w in bootstrap.multiplicities(labels[40:], 200, bootstrap.SEED)])
  assert scores["P@10/ci95_low"] == pytest.approx(np.percentile(values, 2.5))


def test_multilabel_relevance():
  rel = retrieval.relevance(np.array([[1, 0, 1]]), np.array([[0, 0, 1], [0, 1, 0]]))
  assert rel.tolist() == [[True, False]]
  index = index_lib.in_memory(np.eye(3), np.array([[1, 0], [0, 1], [1, 1]]), ["a", "b", "c"])
  scores = retrieval.evaluate(np.array([[1.0, 0.0, 0.1]]), np.array([[1, 0]]), index, ks=(1, 2))
  assert scores["P@1"] == 1.0 and scores["P@2"] == 1.0 and scores["mAP"] == 1.0


def test_pr_curve_png(tmp_path):
  scores = {"pr_curve/recall": retrieval.RECALL_LEVELS.tolist(), "pr_curve/precision": [1.0] * 11,
            "pr_curve/precision/ci95_low": [0.9] * 11, "pr_curve/precision/ci95_high": [1.0] * 11,
            "mAP": 1.0, "random_mAP": 0.5}
  retrieval.plot_pr_curve(scores, tmp_path / "pr.png", "test")
  assert (tmp_path / "pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
