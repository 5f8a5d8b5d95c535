"""The vectorised stratified bootstrap: its weighted AUC against scikit-learn on expanded
data, its strata, its determinism, and its intervals holding their estimates (the
proportions' Wilson intervals are tested in test_clinical.py)."""
import numpy as np
import pytest
from sklearn import metrics as skm

from medjax.eval import bootstrap, calibration


def test_weighted_auc_equals_sklearn_on_the_repeated_examples():
  rng = np.random.default_rng(0)
  score = np.round(rng.normal(size=40), 1)  # Rounded: many ties.
  positive = rng.random(40) < 0.4
  weights = rng.integers(0, 4, size=(5, 40)).astype(float)
  got = bootstrap.weighted_auc(weights, positive, score)
  for row, value in zip(weights, got):
    repeat = row.astype(int)
    assert value == pytest.approx(skm.roc_auc_score(np.repeat(positive, repeat),
                                                    np.repeat(score, repeat)), abs=1e-12)
  ones = bootstrap.weighted_auc(np.ones((1, 40)), positive, score)[0]
  assert ones == pytest.approx(skm.roc_auc_score(positive, score), abs=1e-12)


def test_resamples_keep_the_class_counts():
  strata = np.array([0] * 7 + [1] * 3 + [2] * 12)
  rows = np.concatenate(list(bootstrap.multiplicities(strata, resamples=300, seed=3)))
  assert rows.shape == (300, 22)
  for s in range(3):
    assert (rows[:, strata == s].sum(1) == (strata == s).sum()).all()
  assert rows.std(0).min() > 0  # Every example is sometimes drawn more, sometimes less.


def _example(n=624, seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.random(n) < 0.625).astype(int)
  logits = rng.normal(size=(n, 2)) + 1.2 * np.eye(2)[labels]
  return labels, calibration.softmax(logits)


def test_intervals_are_seeded_and_reproducible():
  labels, scores = _example()
  a = bootstrap.single_label(labels, scores, ("n", "p"), seed=7)
  b = bootstrap.single_label(labels, scores, ("n", "p"), seed=7)
  c = bootstrap.single_label(labels, scores, ("n", "p"), seed=8)
  assert a == b
  assert a != c
  # The proportions (accuracy, sensitivity, ...) get Wilson intervals in clinical.py.
  assert set(a) == {f"{k}/ci95_{side}" for side in ("low", "high")
                    for k in ("balanced_accuracy", "roc_auc")}


def test_intervals_contain_the_estimates():
  labels, scores = _example()
  ci = bootstrap.single_label(labels, scores, ("n", "p"))
  auc = skm.roc_auc_score(labels == 1, scores[:, 1])
  assert ci["roc_auc/ci95_low"] < auc < ci["roc_auc/ci95_high"]
  balanced = skm.balanced_accuracy_score(labels, scores.argmax(1))
  assert ci["balanced_accuracy/ci95_low"] < balanced < ci["balanced_accuracy/ci95_high"]


def test_multi_label_intervals():
  rng = np.random.default_rng(2)
  targets = (rng.random((200, 3)) < 0.3).astype(int)
  probs = np.clip(targets * 0.5 + rng.random((200, 3)) * 0.6, 0, 1)
  ci = bootstrap.multi_label(targets, probs, ("a", "b", "c"), resamples=500)
  hamming = ((probs > 0.5) == targets).mean()
  assert ci["hamming_similarity/ci95_low"] < hamming < ci["hamming_similarity/ci95_high"]
  assert "exact_match/ci95_low" not in ci  # A proportion: Wilson's, in clinical.py.
  for name in "abc":
    assert 0.5 < ci[f"roc_auc/{name}/ci95_low"] < ci[f"roc_auc/{name}/ci95_high"] <= 1


def test_paired_difference_of_a_run_with_itself_is_zero():
  labels, scores = _example(200)
  same = bootstrap.paired_auc_difference(labels, scores, scores, resamples=200)
  assert same["difference/ci95_low"] == same["difference/ci95_high"] == 0
  assert same["p_value"] == 1.0
  noisy = calibration.softmax(np.random.default_rng(5).normal(size=scores.shape))
  better = bootstrap.paired_auc_difference(labels, scores, noisy, resamples=500)
  assert better["difference/ci95_low"] > 0 and better["p_value"] < 0.01
