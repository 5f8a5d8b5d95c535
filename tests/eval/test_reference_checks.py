"""The statistics reviewers read, against reference implementations (scipy's Wilson
interval and binomial test, scikit-learn's scores, brute-force enumerations), on the edge
cases real test sets have: 100 % sensitivity on a few positives, a class never predicted,
one positive, a perfect model against a constant one, p-values past a test's resolution,
ids listed twice, a key only one seed defines."""
import itertools
import json

import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from medjax.eval import (bootstrap, calibration, clinical, comparison, evaluation, metrics,
                         paired, predictions, report, results, retrieval)
from medjax.retrieval import index as index_lib

NAMES = ("NORMAL", "PNEUMONIA")


def _wilson(k, n):
  ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
  return ci.low, ci.high


def _small_perfect_sensitivity():
  """20 negatives (one false positive), 12 positives all found."""
  labels = np.array([0] * 20 + [1] * 12)
  probs = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
  probs[0] = [0.4, 0.6]
  return labels, probs


def test_proportion_intervals_are_wilson_score_intervals():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 45)
  scores = calibration.softmax(rng.normal(size=(45, 3)) + 1.2 * np.eye(3)[labels])
  s = clinical.single_label(labels, scores, "abc", probabilities=True)
  pred = scores.argmax(1)
  cm = skm.confusion_matrix(labels, pred, labels=[0, 1, 2])
  for c, name in enumerate("abc"):
    tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
    tn = cm.sum() - tp - fn - fp
    for key, k, n in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                      ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
      low, high = _wilson(int(k), int(n))
      assert s[f"{key}/{name}"] == pytest.approx(k / n)
      assert s[f"{key}/{name}/ci95_low"] == pytest.approx(low, abs=1e-12), (key, name)
      assert s[f"{key}/{name}/ci95_high"] == pytest.approx(high, abs=1e-12), (key, name)
  low, high = _wilson(int((pred == labels).sum()), 45)
  assert (s["accuracy/ci95_low"], s["accuracy/ci95_high"]) == pytest.approx((low, high))
  assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))


def test_perfect_sensitivity_on_few_positives_has_a_real_interval():
  """A percentile bootstrap gives 12/12 the 'interval' 1.000-1.000."""
  labels, probs = _small_perfect_sensitivity()
  out = evaluation.final(None, "test", [str(i) for i in range(32)], labels, probs, NAMES,
                         probabilities=True)
  low, high = _wilson(12, 12)
  assert out["sensitivity/PNEUMONIA"] == 1.0
  assert out["sensitivity/PNEUMONIA/ci95_low"] == pytest.approx(low) and low < 0.8
  assert out["sensitivity/PNEUMONIA/ci95_high"] == 1.0
  assert out["specificity/PNEUMONIA/ci95_low"] == pytest.approx(_wilson(19, 20)[0])
  assert "Wilson score" in out["intervals/method"]
  assert "stratified by class" in out["intervals/method"]


def test_multi_label_match_intervals_are_wilson_and_not_called_stratified():
  rng = np.random.default_rng(2)
  targets = (rng.random((60, 3)) < 0.3).astype(int)
  probs = np.clip(targets * 0.5 + rng.random((60, 3)) * 0.6, 0, 1)
  out = evaluation.final(None, "test", [str(i) for i in range(60)], targets, probs, "abc",
                         probabilities=True)
  exact = int(((probs > 0.5) == targets).all(1).sum())
  assert out["exact_match"] == pytest.approx(exact / 60)
  assert (out["exact_match/ci95_low"], out["exact_match/ci95_high"]) == pytest.approx(
      _wilson(exact, 60))
  assert "unstratified" in out["intervals/method"]
  assert "stratified by class" not in out["intervals/method"]


@pytest.mark.filterwarnings("ignore")
def test_macro_f1_leaves_out_a_class_neither_present_nor_predicted():
  labels = np.array([0, 0, 1, 1, 1])
  scores = np.array([[.9, .1, 0], [.2, .8, 0], [.1, .9, 0], [.2, .8, 0], [.6, .4, 0]])
  s = clinical.single_label(labels, scores, "abc", probabilities=True)
  assert s["f1_macro"] == pytest.approx(
      skm.f1_score(labels, scores.argmax(1), labels=[0, 1], average="macro"))
  targets = np.array([[1, 0], [0, 0], [1, 0]])  # Label 2: never present, never predicted.
  probs = np.array([[.9, .1], [.2, .2], [.4, .3]])
  m = clinical.multi_label(targets, probs, ("x", "y"))
  assert m["f1_macro"] == pytest.approx(skm.f1_score(targets[:, 0], probs[:, 0] > .5))


def test_undefined_precision_and_recall_are_left_out_not_zero():
  labels = np.array([0, 0, 1, 1])
  logits = np.log(np.array([[.9, .1, 1e-3], [.8, .2, 1e-3], [.7, .3, 1e-3], [.6, .4, 1e-3]]))
  s = metrics.single_label(logits, labels, ("a", "b", "c"))
  assert "precision/b" not in s and "precision/c" not in s  # Never predicted.
  assert "recall/c" not in s                                # Absent from the split.
  assert s["recall/b"] == 0.0 and s["precision/a"] == pytest.approx(0.5)
  assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels,
                                                                             logits.argmax(1)))
  m = metrics.multi_label(np.array([[1.0, -1.0], [-1.0, -1.0]]), np.array([[1, 0], [0, 0]]),
                          ("x", "y"))
  assert m["precision/x"] == 1.0 and "precision/y" not in m and "recall/y" not in m


def test_delong_is_undefined_not_conclusive_where_its_variance_cannot_be_estimated():
  positive = np.array([1, 1, 1, 0, 0, 0], bool)
  perfect_vs_constant = paired.delong(positive, positive * 1.0, np.zeros(6))
  assert perfect_vs_constant["auc_a"] == 1.0 and perfect_vs_constant["auc_b"] == 0.5
  assert np.isnan(perfect_vs_constant["p_value"])  # Was 1.0: "no difference".
  one_positive = paired.delong(np.array([1, 0, 0, 0, 0], bool), np.arange(5.0)[::-1],
                               np.array([.2, .5, .1, .3, .4]))
  assert np.isnan(one_positive["p_value"])  # Was ~1e-4: a variance taken as 0.
  assert paired.delong(positive, positive * 1.0, positive * 2.0)["p_value"] == 1.0


def test_paired_bootstrap_p_value_is_bounded_by_its_resolution():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, 300)
  good = calibration.softmax(3 * np.eye(3)[labels] + rng.normal(size=(300, 3)))
  noise = calibration.softmax(rng.normal(size=(300, 3)))
  d = bootstrap.paired_auc_difference(labels, good, noise, resamples=400)
  assert d["difference/ci95_low"] > 0
  assert d["p_value"] == pytest.approx(2 / 401)  # (1 + 0) / (1 + B), two-sided.
  macro = skm.roc_auc_score(labels, good, multi_class="ovr", average="macro")
  assert d["auc_a"] == pytest.approx(macro)
  assert bootstrap.paired_auc_difference(labels, good, good, resamples=50)["p_value"] == 1.0


def _run(workdir, ids, labels, probs, names, split="test", extra=None):
  workdir.mkdir(parents=True, exist_ok=True)
  measures = evaluation.final(workdir, split, ids, labels, probs, names, probabilities=True)
  found = {f"{split}/{k}": v for k, v in measures.items()}
  found.update(extra or {})
  (workdir / "results.json").write_text(json.dumps(found))
  return workdir


def test_multi_class_pair_reports_the_auc_of_the_split_compared(tmp_path):
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 3, 90)
  ids = [f"val/{i}" for i in range(90)]
  a = calibration.softmax(2 * np.eye(3)[labels] + rng.normal(size=(90, 3)))
  b = calibration.softmax(np.eye(3)[labels] + rng.normal(size=(90, 3)))
  # The runs' test AUCs (another split) must not stand in for the val AUCs tested.
  wa = _run(tmp_path / "a", ids, labels, a, "xyz", "val", {"test/roc_auc": 0.11})
  wb = _run(tmp_path / "b", ids, labels, b, "xyz", "val", {"test/roc_auc": 0.22})
  _, (t,) = comparison.compare([wa, wb], split="val")
  assert t["AUC a"] == pytest.approx(skm.roc_auc_score(labels, a, multi_class="ovr"))
  assert t["AUC b"] == pytest.approx(skm.roc_auc_score(labels, b, multi_class="ovr"))


def test_a_repeated_id_is_refused_not_paired_with_the_wrong_row(tmp_path):
  labels = np.array([0, 1, 1, 0, 1, 0])
  probs = calibration.softmax(np.eye(2)[labels] + np.linspace(-1, 1, 12).reshape(6, 2))
  wa = _run(tmp_path / "a", ["p", "p", "q", "r", "s", "t"], labels, probs, NAMES)
  wb = _run(tmp_path / "b", ["p", "q", "q", "r", "s", "t"], labels, probs, NAMES)
  with pytest.raises(ValueError, match="distinct ids"):
    comparison.compare([wa, wb])


def test_one_class_split_is_compared_without_an_auc_test(tmp_path):
  labels = np.ones(8, int)
  probs = calibration.softmax(np.random.default_rng(5).normal(size=(8, 2)))
  ids = [str(i) for i in range(8)]
  _, (t,) = comparison.compare([_run(tmp_path / "a", ids, labels, probs, NAMES),
                                _run(tmp_path / "b", ids, labels, probs[::-1], NAMES)])
  assert t["AUC test"] == "none (one class only)" and np.isnan(t["AUC p"])


def test_markdown_states_methods_sidedness_multiplicity_and_never_prints_p_0():
  row = {"run": "a", "workdir": "/a", "examples": 10, "accuracy": 0.8, "accuracy low": 0.5,
         "accuracy high": 0.9, "balanced_accuracy": float("nan"),
         "balanced_accuracy low": 0.6, "balanced_accuracy high": 0.9}
  test = {"run a": "a", "run b": "b", "a only correct": 30, "b only correct": 0,
          "McNemar p": 0.0, "AUC test": "DeLong", "AUC a": 0.9, "AUC b": 0.8, "AUC p": 1e-9}
  text = comparison.markdown([row, dict(row, run="b")], [test])
  # b only correct 0, then the p-values: McNemar's and DeLong's below printable precision.
  assert "| 30 | 0 | < 0.0001 | DeLong | 0.9000 | 0.8000 | < 0.0001 |" in text
  assert "nan" not in text  # A missing value is "-", never "nan (0.6-0.9)".
  assert "two-sided" in text and "2 tests" in text
  wilson = dict(row, intervals="95 % intervals: Wilson score for proportions")
  assert "Wilson score" in comparison.markdown([wilson], [])


def _interpolated_precision_by_rank(relevant_in_rank_order, level):
  """TREC's definition: the best precision at any rank whose recall reaches ``level``."""
  rel = np.asarray(relevant_in_rank_order, float)
  hits = np.cumsum(rel)
  precision, recall = hits / np.arange(1, len(rel) + 1), hits / rel.sum()
  return precision[recall >= level].max()


def test_pr_curve_at_recall_zero_is_a_rank_precision_not_always_one():
  angles = np.array([0.1, 0.2, 0.3, 0.4])  # The query ranks them in this order.
  index = index_lib.in_memory(np.stack([np.cos(angles), np.sin(angles)], 1), [1, 0, 1, 0],
                              ["a", "b", "c", "d"])
  scores = retrieval.evaluate(np.array([[1.0, 0.0]]), np.array([0]), index, ks=(1,),
                              resamples=0)
  order = [False, True, False, True]
  expected = [_interpolated_precision_by_rank(order, r) for r in retrieval.RECALL_LEVELS]
  assert scores["pr_curve/precision"] == pytest.approx(expected)
  assert scores["pr_curve/precision"][0] == pytest.approx(0.5)  # Was 1.0.


@pytest.mark.parametrize("relevant,items", [(1, 7), (2, 6), (4, 8), (8, 8)])
def test_random_map_is_the_expected_ap_of_a_random_ranking(relevant, items):
  aps = [np.mean([(i + 1) / r for i, r in enumerate(ranks)])
         for ranks in itertools.combinations(range(1, items + 1), relevant)]
  rng = np.random.default_rng(relevant)
  index = index_lib.in_memory(rng.normal(size=(items, 3)), [0] * relevant + [1] * (
      items - relevant), [str(i) for i in range(items)])
  scores = retrieval.evaluate(rng.normal(size=(1, 3)), np.array([0]), index, resamples=0)
  assert scores["random_mAP"] == pytest.approx(np.mean(aps))


def test_a_key_one_seed_defines_gets_no_standard_deviation(tmp_path):
  config = ml_collections.ConfigDict({"seed": 0, "num_seeds": 3})
  per_seed = [{"config": {"seed": s}, "test/accuracy": a} for s, a in enumerate([.8, .9, .7])]
  per_seed[0]["test/ppv/rare"] = 0.5
  for r in per_seed:
    r.update({"test/accuracy/ci95_low": 0.5, "test/bootstrap/seed": 0})
  out = results.over_seeds(per_seed, config, tmp_path)
  assert not any("ci95" in k or "bootstrap" in k for k in out)  # Seeds' bounds: no interval.
  assert out["test/accuracy/std"] == pytest.approx(np.std([.8, .9, .7], ddof=1))
  assert out["test/ppv/rare/mean"] == 0.5 and out["test/ppv/rare/num_seeds"] == 1
  assert "test/ppv/rare/std" not in out  # Was 0.0: a spread of one value.


def test_report_names_each_interval_method(tmp_path):
  labels, probs = _small_perfect_sensitivity()
  ids = [str(i) for i in range(32)]
  found = {f"test/{k}": v for k, v in evaluation.final(
      tmp_path, "test", ids, labels, probs, NAMES, probabilities=True).items()}
  wrong = evaluation.confidently_wrong(predictions.read(tmp_path / "predictions" / "test.csv"))
  page = report.write(tmp_path, found, {}, wrong, {}).read_text()
  assert "Wilson score for proportions" in page and "(stratified bootstrap)" not in page
