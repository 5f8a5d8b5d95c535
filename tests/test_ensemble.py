"""python -m medjax.ensemble: the mean of several runs' probabilities, as a run of its own."""
import json
import subprocess
import sys

import numpy as np
import pytest

from medjax import ensemble
from medjax.eval import predictions as predictions_lib
from tests.conftest import REPO_ROOT


def _run(path, scores, labels, ids=None):
  path.mkdir(parents=True)
  ids = ids or [f"x{i}" for i in range(len(labels))]
  (path / "results.json").write_text(json.dumps({"config": {"pipeline": "supervised"}}))
  scores = np.asarray(scores, np.float64)
  for split in ("val", "test"):
    predictions_lib.write(path / "predictions" / f"{split}.csv", predictions_lib.Predictions(
        ids, np.asarray(labels), scores.argmax(1), scores, ("NORMAL", "PNEUMONIA"), False))
  return path


def test_ensemble_averages_probabilities_and_writes_a_run(tmp_path):
  labels = [0, 0, 1, 1]
  a = _run(tmp_path / "a", [[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.2, 0.8]], labels)
  # Same examples in another order: matched by id.
  b = _run(tmp_path / "b", [[0.3, 0.7], [0.7, 0.3], [0.9, 0.1], [0.5, 0.5]], [1, 0, 0, 1],
           ids=["x3", "x0", "x1", "x2"])
  results = ensemble.ensemble([a, b], tmp_path / "out")
  p = predictions_lib.read(tmp_path / "out" / "predictions" / "test.csv")
  np.testing.assert_allclose(p.scores[:, 1], [0.2, 0.35, 0.525, 0.75])
  assert results["test/accuracy"] == 1.0 and results["ensemble/members"] == 2
  assert results["test/roc_auc"] == 1.0 and "test/sensitivity/PNEUMONIA" in results
  stored = json.loads((tmp_path / "out" / "results.json").read_text())
  assert stored["config"]["members"][0].endswith("a") and "environment" in stored
  assert (tmp_path / "out" / "report.html").exists()
  assert ensemble.ensemble([a, b], tmp_path / "out")["test/accuracy"] == 1.0  # Reused.
  assert "test/log_loss" in results and "test/ece" in results


def test_sigmoid_members_rows_get_no_log_loss_or_ece(tmp_path):
  """One-vs-all sigmoid heads on single-label data: rows need not sum to one, so the
  mean's log loss and ECE would mean nothing; the rankings still give AUC."""
  labels = [0, 0, 1, 1]
  a = _run(tmp_path / "a", [[0.9, 0.3], [0.6, 0.2], [0.2, 0.7], [0.1, 0.95]], labels)
  b = _run(tmp_path / "b", [[0.8, 0.1], [0.7, 0.4], [0.3, 0.6], [0.4, 0.9]], labels)
  results = ensemble.ensemble([a, b], tmp_path / "out")
  assert "test/log_loss" not in results and "test/ece" not in results
  assert results["test/roc_auc"] == 1.0 and results["test/accuracy"] == 1.0
  assert results["test/accuracy/ci95_low"] < 1.0 == results["test/accuracy/ci95_high"]


@pytest.mark.slow
def test_help_and_runs_on_other_examples_refused_in_one_line(tmp_path):
  shown = subprocess.run([sys.executable, "-m", "medjax.ensemble", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
  assert "python -m medjax.ensemble --workdirs=W1,W2" in shown.stdout
  a = _run(tmp_path / "a", [[0.9, 0.1], [0.2, 0.8]], [0, 1])
  b = _run(tmp_path / "b", [[0.9, 0.1], [0.2, 0.8]], [0, 1], ids=["y0", "y1"])
  proc = subprocess.run([sys.executable, "-m", "medjax.ensemble", f"--workdirs={a},{b}",
                         f"--workdir={tmp_path / 'out'}"], capture_output=True, text=True,
                        cwd=REPO_ROOT)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().startswith("medjax.ensemble: error:") and "different examples" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


def test_a_folder_of_another_run_or_a_file_is_refused_and_left_as_it_was(tmp_path):
  a = _run(tmp_path / "a", [[0.9, 0.1], [0.2, 0.8]], [0, 1])
  b = _run(tmp_path / "b", [[0.8, 0.2], [0.3, 0.7]], [0, 1])
  unfinished = tmp_path / "training"  # A training run killed before its results.json.
  (unfinished / "checkpoints" / "12").mkdir(parents=True)
  (unfinished / "predictions").mkdir()
  (unfinished / "predictions" / "val.csv").write_text("kept")
  with pytest.raises(ValueError, match="holds files an ensemble does not write .*checkpoints"):
    ensemble.ensemble([a, b], unfinished)
  assert sorted(p.name for p in unfinished.rglob("*")) == ["12", "checkpoints", "predictions",
                                                             "val.csv"]
  assert (unfinished / "predictions" / "val.csv").read_text() == "kept"
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="is a file"):
    ensemble.ensemble([a, b], tmp_path / "notes.txt")
