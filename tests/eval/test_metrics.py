"""Metric values against hand-computed results on fixed small examples."""
import numpy as np
import pytest

from medjax.eval import metrics


def test_multi_label_scores_hand_computed():
  # Labels: Body, Head-Neck, Upper-Limb, Lower-Limb.
  truth = np.array([[1, 0, 0, 0],   # exact hit
                    [0, 1, 1, 0],   # one of two found, one false positive
                    [0, 0, 0, 0],   # true negative predicted negative
                    [0, 0, 0, 1],   # missed entirely
                    [1, 1, 0, 0]])  # predicted nothing
  pred = np.array([[1, 0, 0, 0],
                   [1, 1, 0, 0],
                   [0, 0, 0, 0],
                   [0, 1, 0, 0],
                   [0, 0, 0, 0]])
  s = metrics.multi_label_scores(pred, truth)
  assert s["exact_match"] == pytest.approx(2 / 5)       # rows 0 and 2
  assert s["any_match"] == pytest.approx(3 / 5)         # rows 0, 1 and 2 (both empty)
  # Correct slots: 4 + 2 + 4 + 2 + 2 = 14 of 20.
  assert s["hamming_similarity"] == pytest.approx(14 / 20)


def test_multi_label_from_logits_and_per_label_scores():
  logits = np.array([[2.0, -1.0], [-3.0, 0.5], [1.0, 1.0]])
  targets = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
  s = metrics.multi_label(logits, targets, ("a", "b"))
  assert s["exact_match"] == pytest.approx(2 / 3)
  assert s["precision/b"] == pytest.approx(1 / 2)
  assert s["recall/b"] == pytest.approx(1.0)
  expected_loss = np.log1p(np.exp(-logits * (2 * targets - 1))).sum(1).mean()
  assert s["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_single_label_hand_computed():
  logits = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
  labels = np.array([0, 1, 2, 2])
  s = metrics.single_label(logits, labels, ("x", "y", "z"))
  assert s["accuracy"] == pytest.approx(3 / 4)
  assert s["recall/z"] == pytest.approx(1 / 2)
  assert s["precision/y"] == pytest.approx(1 / 2)
  assert s["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  assert s["loss"] == pytest.approx(-logp[np.arange(4), labels].mean(), rel=1e-6)
