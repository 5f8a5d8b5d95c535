"""A split's final evaluation on small arrays: the CSV reads back to the same numbers, the
plots are PNGs, every interval holds its estimate; temperature scaling; report.html; the
recorded command line."""
import os

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from medjax.eval import calibration, evaluation, predictions, report

NAMES = ("NORMAL", "PNEUMONIA")


def _binary(n=120, seed=0):
  rng = np.random.default_rng(seed)
  labels = (rng.random(n) < 0.6).astype(int)
  probs = calibration.softmax(rng.normal(size=(n, 2)) + 1.5 * np.eye(2)[labels])
  return [f"test/{NAMES[y]}/img_{i:03d}.jpeg" for i, y in enumerate(labels)], labels, probs


def test_final_writes_what_recomputes_to_the_reported_numbers(tmp_path):
  ids, labels, probs = _binary()
  out = evaluation.final(tmp_path, "test", ids, labels, probs, NAMES, probabilities=True)
  p = predictions.read(tmp_path / "predictions" / "test.csv")
  assert p.ids == ids and p.class_names == NAMES and not p.multi_label
  np.testing.assert_array_equal(p.scores, probs)  # repr round-trips floats exactly.
  positive = p.labels == 1
  assert out["roc_auc"] == skm.roc_auc_score(positive, p.scores[:, 1])
  assert out["sensitivity/PNEUMONIA"] == skm.recall_score(positive, p.predicted == 1)
  assert out["specificity/PNEUMONIA"] == skm.recall_score(~positive, p.predicted != 1)
  for key, value in out.items():
    if f"{key}/ci95_low" in out:
      assert out[f"{key}/ci95_low"] <= value <= out[f"{key}/ci95_high"], key
  names = sorted(f.name for f in (tmp_path / "plots").iterdir())
  assert names == ["test_confusion.png", "test_pr.png", "test_reliability.png", "test_roc.png"]
  for f in (tmp_path / "plots").iterdir():
    with Image.open(f) as image:
      assert image.format == "PNG" and min(image.size) > 300
  assert evaluation.final(None, "test", ids, labels, probs, NAMES, probabilities=True) == out


def test_multi_label_predictions_and_worst_errors(tmp_path):
  targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
  probs = np.array([[.9, .2], [.4, .6], [.7, .3], [.2, .95], [.6, .1], [.3, .7]])
  ids = [f"im{i}" for i in range(6)]
  out = evaluation.final(tmp_path, "test", ids, targets, probs, ("head", "chest"),
                         probabilities=True)
  assert "exact_match/ci95_low" in out and "roc_auc/head" in out
  p = predictions.read(tmp_path / "predictions" / "test.csv")
  assert p.multi_label
  np.testing.assert_array_equal(p.labels, targets)
  np.testing.assert_array_equal(p.predicted, probs > 0.5)
  wrong = evaluation.confidently_wrong(p, 2)
  assert [w["id"] for w in wrong] == ["im3", "im2"]  # Errors of .95 and .7.
  assert wrong[0]["label"] == "none" and wrong[0]["predicted"] == "chest"


def test_confidently_wrong_orders_single_label_errors_by_confidence():
  p = predictions.Predictions(["a", "b", "c", "d"], np.array([0, 0, 1, 1]),
                              np.array([1, 1, 1, 0]),
                              np.array([[.4, .6], [.1, .9], [.2, .8], [.7, .3]]), NAMES, False)
  assert [w["id"] for w in evaluation.confidently_wrong(p)] == ["b", "d", "a"]


def test_temperature_scaling_recovers_a_known_temperature():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(20000, 3)) * 3
  labels = np.array([rng.choice(3, p=row) for row in calibration.softmax(logits / 2.5)])
  assert calibration.fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_per_label_temperatures_recover_known_ones_and_keep_the_threshold():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(20000, 2)) * 3
  targets = (rng.random((20000, 2)) < calibration.sigmoid(scores / np.array([0.5, 3.0])))
  temperatures = calibration.fit_label_temperatures(scores, targets)
  np.testing.assert_allclose(temperatures, [0.5, 3.0], rtol=0.05)
  separable = calibration.fit_label_temperatures(np.array([[-2.0], [-1.0], [1.0], [3.0]]),
                                                 np.array([[0], [0], [1], [1]]))
  assert 0.1 < separable[0] < 10  # Finite: Platt's targets, as for the softmax.


def test_temperature_stays_finite_on_separable_held_out_scores():
  """Ten held-out SVM margins that separate the classes: plain log loss falls all the way
  to T -> 0, where float64 probabilities saturate to 0/1 and tie."""
  scores = np.array([[-m, m] for m in (0.3, 0.5, 0.8, 1.1, 2.0)]
                    + [[m, -m] for m in (0.2, 0.6, 0.9, 1.5, 2.5)])
  labels = np.array([1] * 5 + [0] * 5)
  temperature = calibration.fit_temperature(scores, labels)
  assert 0.1 < temperature < 10  # Plain log loss: the lower bound, e^-7.
  probs = calibration.softmax(scores / temperature)[:, 1]
  assert probs.max() < 0.999 and len(set(probs.round(12))) == 10  # No ties: ranks intact.


def test_report_is_one_self_contained_page(tmp_path):
  ids, labels, probs = _binary(60)
  results = {f"test/{k}": v for k, v in evaluation.final(
      tmp_path, "test", ids, labels, probs, NAMES, probabilities=True).items()}
  results.update({"test/num_examples": 60, "test/accuracy": 0.8, "command": "python -m x <y>",
                  "config": {"seed": 0}, "calibration/method": "temperature scaling",
                  "calibration/temperature": 0.5})
  wrong = evaluation.confidently_wrong(predictions.read(tmp_path / "predictions" / "test.csv"))
  images = {wrong[0]["id"]: np.zeros((20, 30, 3), np.uint8)}
  page = report.write(tmp_path, results, {"train": {"NORMAL": 3, "PNEUMONIA": 5}}, wrong,
                      images).read_text()
  assert "python -m x &lt;y&gt;" in page
  assert ("Wilson score for proportions" in page
          and "percentile bootstrap (2000 resamples stratified by class, seed 0)" in page)
  assert "Scores: temperature scaling (T = 0.500)." in page
  assert page.count("<img") == 4 + len(wrong) - (len(wrong) - 1)  # 4 plots, 1 thumbnail.
  assert "(image not available)" in page
  assert "http:" not in page and "https:" not in page and "src='data:image/png;base64," in page
  low, high = results["test/roc_auc/ci95_low"], results["test/roc_auc/ci95_high"]
  assert f"{low:.3f} – {high:.3f}" in page
  # A multi-label run scales each label by its own temperature: all are shown.
  results["calibration/temperature"] = [0.5, 1.25]
  page = report.write(tmp_path, results, {}, [], {}).read_text()
  assert "(T per label = 0.500, 1.250)." in page


def test_command_line_is_a_rerunnable_shell_line(monkeypatch):
  from medjax.eval import results
  monkeypatch.setattr("sys.argv", ["/x/medjax/main.py", "--config=configs/vlad.py:a,b=c d",
                                   "--workdir=/w"])
  for key in [k for k in os.environ if k.startswith("MEDJAX_")]:
    monkeypatch.delenv(key)
  monkeypatch.setenv("MEDJAX_DATA_DIR", "/data dir")
  line = results.command_line()
  assert line == ("MEDJAX_DATA_DIR='/data dir' "
                  "python -m medjax.main '--config=configs/vlad.py:a,b=c d' --workdir=/w")
