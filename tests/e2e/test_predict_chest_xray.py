"""medjax.predict on Kermany test images gives a finished frozen-feature run's own
``predictions/test.csv``, row by row (real data, through the CLIs).

The run evaluates the first 96 test images and predict reads those files from a folder of
links: every step of the path is the full run's, at a sixth of the extraction work."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

N_TEST = 96


@pytest.mark.slow
def test_predict_reproduces_the_runs_test_predictions(shared_data, tfds_dir, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MEDJAX_DATA_DIR=str(shared_data),
             MEDJAX_TFDS_DIR=str(tfds_dir))
  work = tmp_path / "run"
  train = subprocess.run([sys.executable, "-m", "medjax.main",
                          "--config=configs/vlad.py:dataset=chest_xray,aggregation=avgpool",
                          "--config.data.train_split=train[:256]",
                          f"--config.data.test_split=test[:{N_TEST}]", f"--workdir={work}"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert train.returncode == 0, train.stderr[-3000:]
  # The run's own test predictions, as it wrote them (calibrated SVM probabilities).
  own = {r["id"]: r for r in csv.DictReader((work / "predictions" / "test.csv").open())}
  assert len(own) == N_TEST and {i.split("/")[1] for i in own} == {"NORMAL", "PNEUMONIA"}
  test_dir = tmp_path / "images" / "test"
  for image_id in own:  # "test/NORMAL/IM-0001-0001.jpeg"
    (test_dir.parent / image_id).parent.mkdir(parents=True, exist_ok=True)
    (test_dir.parent / image_id).symlink_to(shared_data / "chest_xray" / image_id)
  out = subprocess.run([sys.executable, "-m", "medjax.predict", f"--workdir={work}",
                        f"--out={tmp_path / 'pred.csv'}", str(test_dir)], cwd=REPO_ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  # The console is medjax's: no TensorFlow start-up notices, no library INFO lines.
  assert not any(word in out.stderr for word in (
      "oneDNN", "absl::InitializeLog", "cpu_feature_guard", "Unable to initialize backend",
      "checkpoint_manager")), out.stderr[-3000:]
  rows = {str(Path(r["path"]).relative_to(test_dir.parent)): r
          for r in csv.DictReader((tmp_path / "pred.csv").open())}
  assert sorted(own) == sorted(rows)
  names = json.loads((work / "data.json").read_text())["class_names"]
  columns = [f"score/{c}" for c in names]
  got = np.array([[float(rows[i][c]) for c in columns] for i in sorted(own)])
  want = np.array([[float(own[i][c]) for c in columns] for i in sorted(own)])
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
  assert [rows[i]["predicted"] for i in sorted(own)] == [own[i]["predicted"] for i in sorted(own)]
