"""The real CLI on the real chest X-rays: the smoke runs of systems 5 (average pooling) and 3
(zero-bias CAE), each on the offline default backbone that the VGG19/AlexNet configs fall
back to, writing metrics.jsonl and results.json; ``medjax.predict`` on the system 5 run's
test images then gives the run's own ``predictions/test.csv``, row by row."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.test_cli_supervised import env

pytestmark = pytest.mark.slow  # The real CLI in a subprocess on real data.


@pytest.mark.parametrize("config, trained", [
    ("configs/vlad.py:smoke,dataset=chest_xray,aggregation=avgpool", False),
    ("configs/cae_imageclef16.py:smoke,dataset=chest_xray", True)])
def test_smoke_run_on_chest_xrays(shared_data, tfds_dir, tmp_path, config, trained):
  result = subprocess.run(
      [sys.executable, "-m", "medjax.main", f"--config={config}", f"--workdir={tmp_path}"],
      env=env(shared_data, tfds_dir), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "test/accuracy" in result.stdout
  assert "FALLING BACK to the offline default efficientnet_lite0" in result.stderr
  # The command set TensorFlow up before it started (tf_runtime): input graphs as written.
  assert "TensorFlow started before medjax configured it" not in result.stderr
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["backbone/used"] == "efficientnet_lite0"
  assert results["test/num_examples"] == 128
  assert set(results) >= {"test/recall/NORMAL", "test/recall/PNEUMONIA", "test/confusion_matrix"}
  # Even smoke features separate the classes: better than chance on both (78 % of the
  # first 128 test images are PNEUMONIA, so balanced accuracy is the informative number).
  assert results["test/balanced_accuracy"] > 0.6
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert json.loads(lines[-1])["test/accuracy"] == results["test/accuracy"]
  assert (tmp_path / "cae" / "checkpoints").is_dir() == trained
  # The SVM's scores are calibrated on out-of-fold train scores, then evaluated clinically.
  assert "out-of-fold" in results["calibration/method"]
  assert 0 <= results["test/ece"] < 0.5
  for key in ("accuracy", "roc_auc", "sensitivity/PNEUMONIA", "specificity/PNEUMONIA"):
    assert results[f"test/{key}/ci95_low"] <= results[f"test/{key}"] <= results[
        f"test/{key}/ci95_high"], key
  assert len((tmp_path / "predictions" / "test.csv").read_text().splitlines()) == 129
  assert (tmp_path / "report.html").is_file()
  if not trained:
    assert_predict_reproduces_the_test_predictions(shared_data, tfds_dir, tmp_path)


def assert_predict_reproduces_the_test_predictions(shared_data, tfds_dir, work):
  """medjax.predict reads the run's test images from a folder of links: every step of the
  path is the run's own, so the calibrated SVM probabilities must agree row by row."""
  own = {r["id"]: r for r in csv.DictReader((work / "predictions" / "test.csv").open())}
  assert {i.split("/")[1] for i in own} == {"NORMAL", "PNEUMONIA"}
  images = work / "predict_images"
  for image_id in own:  # "test/NORMAL/IM-0001-0001.jpeg"
    (images / image_id).parent.mkdir(parents=True, exist_ok=True)
    (images / image_id).symlink_to(shared_data / "chest_xray" / image_id)
  out = subprocess.run([sys.executable, "-m", "medjax.predict", f"--workdir={work}",
                        f"--out={images / 'pred.csv'}", str(images / "test")], cwd=REPO_ROOT,
                       env=env(shared_data, tfds_dir), capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  # The console is medjax's: no TensorFlow start-up notices, no library INFO lines.
  assert not any(word in out.stderr for word in (
      "oneDNN", "absl::InitializeLog", "cpu_feature_guard", "Unable to initialize backend",
      "checkpoint_manager", "TensorFlow started before medjax")), out.stderr[-3000:]
  rows = {str(Path(r["path"]).relative_to(images)): r
          for r in csv.DictReader((images / "pred.csv").open())}
  assert sorted(own) == sorted(rows)
  names = json.loads((work / "data.json").read_text())["class_names"]
  columns = [f"score/{c}" for c in names]
  got = np.array([[float(rows[i][c]) for c in columns] for i in sorted(own)])
  want = np.array([[float(own[i][c]) for c in columns] for i in sorted(own)])
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
  assert [rows[i]["predicted"] for i in sorted(own)] == [own[i]["predicted"] for i in sorted(own)]
