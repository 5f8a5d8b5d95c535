"""The real CLI on the real chest X-rays: the smoke runs of systems 5 (average pooling) and 3
(zero-bias CAE), each on the offline default backbone that the VGG19/AlexNet configs fall
back to, writing metrics.jsonl and results.json."""
import json
import subprocess
import sys

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
