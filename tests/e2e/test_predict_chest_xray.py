"""medjax.predict on the 624 Kermany test images gives a finished frozen-feature run's own
test predictions, row by row (real data, through the CLIs)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medjax.data import builders
from medjax.data.pipeline import _ids_and_labels
from medjax.features import extract
from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_predict_reproduces_the_runs_test_predictions(shared_data, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MEDJAX_DATA_DIR=str(shared_data),
             MEDJAX_TFDS_DIR=str(tmp_path / "tfds"))
  work = tmp_path / "run"
  train = subprocess.run([sys.executable, "-m", "medjax.main",
                          "--config=configs/vlad.py:dataset=chest_xray,aggregation=avgpool",
                          "--config.data.train_split=train[:256]", f"--workdir={work}"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert train.returncode == 0, train.stderr[-3000:]
  test_dir = shared_data / "chest_xray" / "test"
  out = subprocess.run([sys.executable, "-m", "medjax.predict", f"--workdir={work}",
                        f"--out={tmp_path / 'pred.csv'}", str(test_dir)], cwd=REPO_ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = {str(Path(r["path"]).relative_to(test_dir.parent)): r
          for r in csv.DictReader((tmp_path / "pred.csv").open())}
  assert len(rows) == 624
  # The run's own test scores: its stored test features through its saved SVM.
  builder = builders.get_builder("chest_xray", manual_dir=str(shared_data),
                                 tfds_dir=str(tmp_path / "tfds"))
  ids, labels = _ids_and_labels(builder, "test", "label")
  features, feature_labels = extract.load(next((work / "features" / "test").glob("*/*")))
  np.testing.assert_array_equal(labels, feature_labels)
  with np.load(work / "svm.npz") as svm:
    decisions = features @ svm["w"] + svm["b"]
  probs = np.exp(decisions - decisions.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  names = json.loads((work / "data.json").read_text())["class_names"]
  got = np.array([[float(rows[i][f"score/{c}"]) for c in names] for i in ids])
  np.testing.assert_allclose(got, probs, atol=1e-4)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
  assert [rows[i]["predicted"] for i in ids] == [names[k] for k in probs.argmax(1)]
  results = json.loads((work / "results.json").read_text())
  accuracy = np.mean([names.index(rows[i]["predicted"]) == y for i, y in zip(ids, labels)])
  assert accuracy == pytest.approx(results["test/accuracy"])
