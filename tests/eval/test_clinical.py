"""Clinical measures against values worked out by hand on small fixed examples."""
import numpy as np
import pytest

from medjax.eval import calibration, clinical

# Seven images, NORMAL (0) / PNEUMONIA (1); the second class is the positive one.
LABELS = np.array([0, 0, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.4, 0.6, 0.3, 0.7, 0.8, 0.9])
SCORES = np.stack([1 - P1, P1], 1)
NAMES = ("NORMAL", "PNEUMONIA")


def test_binary_measures_hand_computed():
  s = clinical.single_label(LABELS, SCORES, NAMES, probabilities=True)
  # Predictions 0,0,1 | 0,1,1,1: for PNEUMONIA TP 3, FN 1, FP 1, TN 2.
  assert s["sensitivity/PNEUMONIA"] == pytest.approx(3 / 4)
  assert s["specificity/PNEUMONIA"] == pytest.approx(2 / 3)
  assert s["ppv/PNEUMONIA"] == pytest.approx(3 / 4)
  assert s["npv/PNEUMONIA"] == pytest.approx(2 / 3)
  assert s["sensitivity/NORMAL"] == pytest.approx(2 / 3)
  assert s["specificity/NORMAL"] == pytest.approx(3 / 4)
  # Positive scores .3 .7 .8 .9 against negatives .1 .4 .6: 1 + 3 + 3 + 3 of 12 pairs.
  assert s["roc_auc"] == pytest.approx(10 / 12)
  # Ranked .9P .8P .7P .6N .4N .3P .1N: precision 1 at recall 1/4, 2/4, 3/4; 4/6 at 1.
  assert s["average_precision"] == pytest.approx(3 / 4 + 1 / 4 * 4 / 6)
  # Observed agreement 5/7, chance (3*3 + 4*4)/49.
  assert s["kappa"] == pytest.approx((5 / 7 - 25 / 49) / (1 - 25 / 49))
  assert s["f1_macro"] == pytest.approx((6 / 8 + 4 / 6) / 2)
  assert s["log_loss"] == pytest.approx(-np.mean(np.log([.9, .6, .4, .3, .7, .8, .9])))
  # Confidences .9 .6 .6 .7 .7 .8 .9 fall in bins 13, 9, 9, 10, 10, 12, 13 of 15;
  # |accuracy - confidence| per bin: .1 (x2), .1 (x2), .2 (x2), .2 (x1).
  assert s["ece"] == pytest.approx((.2 + .2 + .4 + .2) / 7)
  assert "kappa_quadratic" not in s and "roc_auc/NORMAL" not in s


def test_decision_values_get_no_probability_measures():
  s = clinical.single_label(LABELS, SCORES * 5 - 2, NAMES, probabilities=False)
  assert "log_loss" not in s and "ece" not in s
  assert s["roc_auc"] == pytest.approx(10 / 12)  # A rank measure: any monotone score.


def _pair_auc(positive, score):
  pos, neg = score[positive], score[~positive]
  return np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])


def test_multi_class_auc_is_the_macro_one_vs_rest_mean_and_kappa_quadratic():
  rng = np.random.default_rng(1)
  labels = np.repeat([0, 1, 2], 6)
  scores = calibration.softmax(rng.normal(size=(18, 3)) + 1.5 * np.eye(3)[labels])
  s = clinical.single_label(labels, scores, ("a", "b", "c"), probabilities=True, graded=True)
  per_class = [_pair_auc(labels == c, scores[:, c]) for c in range(3)]
  for c, name in enumerate("abc"):
    assert s[f"roc_auc/{name}"] == pytest.approx(per_class[c])
  assert s["roc_auc"] == pytest.approx(np.mean(per_class))
  # Quadratic kappa by its definition: 1 - sum(w O) / sum(w E), w = (i - j)^2.
  pred = scores.argmax(1)
  observed = np.zeros((3, 3))
  np.add.at(observed, (labels, pred), 1)
  expected = np.outer(observed.sum(1), observed.sum(0)) / 18
  w = (np.arange(3)[:, None] - np.arange(3)[None]) ** 2
  assert s["kappa_quadratic"] == pytest.approx(1 - (w * observed).sum() / (w * expected).sum())


@pytest.mark.filterwarnings("ignore:.*cohen_kappa_score.*")
def test_measures_the_data_cannot_define_are_left_out():
  labels = np.zeros(4, int)
  s = clinical.single_label(labels, np.full((4, 2), 0.5), NAMES, probabilities=True)
  assert s["sensitivity/NORMAL"] == 1.0 and s["ppv/NORMAL"] == 1.0
  for key in ("roc_auc", "average_precision", "sensitivity/PNEUMONIA", "specificity/NORMAL",
              "ppv/PNEUMONIA", "kappa"):
    assert key not in s, key


def test_multi_label_per_label_measures():
  targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
  probs = np.array([[.9, .2], [.4, .6], [.7, .3], [.2, .1]])
  s = clinical.multi_label(targets, probs, ("head", "chest"))
  assert s["roc_auc/head"] == pytest.approx(1.0)
  assert s["roc_auc/chest"] == pytest.approx(_pair_auc(targets[:, 1] == 1, probs[:, 1]))
  # chest predicted on row 1 only: TP 1, FN 1, TN 2, FP 0.
  assert s["sensitivity/chest"] == pytest.approx(1 / 2)
  assert s["specificity/chest"] == pytest.approx(1.0)
  assert s["roc_auc"] == pytest.approx((1.0 + s["roc_auc/chest"]) / 2)
