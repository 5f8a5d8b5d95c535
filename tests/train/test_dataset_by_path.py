"""Any config trains on a folder or CSV given by path, with the same numbers either way;
a user's mistake in the dataset path ends the command with one line and exit status 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import irma_cnn, vlad
from medjax import inference
from medjax.explain import methods
from medjax.features import pipeline as frozen
from medjax.train import trainer
from tests.conftest import REPO_ROOT, set_dotted

sys.path.insert(0, str(REPO_ROOT / "tests" / "data"))
from test_by_path import write_csv, write_study  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  root = tmp_path_factory.mktemp("elsewhere") / "my_study"
  rows = write_study(root, {"train": 8, "val": 2, "test": 4}, size=32)
  write_csv(root / "labels.csv", rows)
  return root


def _irma(name, tfds_dir):
  config = irma_cnn.get_config(f"dataset={name},variant=D,image_size=32")
  return set_dotted(config, {"data.tfds_dir": str(tfds_dir), "batch_size": 8,
                             "eval_batch_size": 8, "total_steps": 4, "log_every": 2,
                             "checkpoint_every_steps": 4, "retrieval": False})


def _metrics(results):
  return {k: v for k, v in results.items() if k.startswith(("test/", "val/"))}


@pytest.mark.slow
def test_supervised_config_on_a_folder_and_on_its_csv(study, tmp_path):
  by_folder = trainer.train_and_evaluate(_irma(str(study), tmp_path / "tfds"), tmp_path / "a")
  by_csv = trainer.train_and_evaluate(_irma(str(study / "labels.csv"), tmp_path / "tfds"),
                                      tmp_path / "b")
  assert "test/accuracy" in by_folder and "val/accuracy" in by_folder
  assert _metrics(by_folder) == _metrics(by_csv)
  assert by_folder["data/source_key"] and by_folder["data/source_key"] != by_csv["data/source_key"]
  stored = json.loads((tmp_path / "a" / "results.json").read_text())
  assert stored["data/source_key"] == by_folder["data/source_key"]


@pytest.mark.slow
def test_frozen_features_config_on_a_folder_and_on_its_csv(study, tmp_path):
  def config(name):
    c = vlad.get_config(f"dataset={name},aggregation=avgpool,scale=64")
    return set_dotted(c, {"data.tfds_dir": str(tmp_path / "tfds"), "features.batch_size": 8})
  by_folder = frozen.train_and_evaluate(config(str(study)), tmp_path / "a")
  by_csv = frozen.train_and_evaluate(config(str(study / "labels.csv")), tmp_path / "b")
  assert _metrics(by_folder) == _metrics(by_csv) and "test/accuracy" in by_folder
  # predict and explain over the frozen features + SVM run: the run's own test numbers.
  run = inference.load(tmp_path / "a")
  paths = sorted((study / "test").rglob("*.png"))
  scores, errors = inference.predict_files(run, paths, batch_size=8)
  assert not any(errors)
  truth = [run.class_names.index(p.parent.name) for p in paths]
  assert np.mean(scores.argmax(1) == truth) == pytest.approx(by_folder["test/accuracy"])
  np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)
  heat = methods.occlusion(run, run.preprocess(paths[0].read_bytes()), truth[0])
  assert heat.shape == (64, 64) and np.isfinite(heat).all()


@pytest.mark.slow
@pytest.mark.parametrize("name, message", [
    ("/no/such/study", "/no/such/study does not exist"),
    ("not_a_dataset", "neither a known dataset"),
])
def test_cli_dataset_errors_are_one_line_exit_2(tmp_path, name, message):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MEDJAX_TFDS_DIR=str(tmp_path / "tfds"))
  out = subprocess.run([sys.executable, "-m", "medjax.main",
                        "--config=configs/irma_cnn.py:smoke,dataset=image_folder",
                        f"--config.data.name={name}", f"--workdir={tmp_path / 'w'}"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("medjax.main: error:") and message in last
  assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_loss_auto_trains_a_multi_label_csv_with_weighted_sigmoids(study, tmp_path):
  """The transfer config's ``loss='auto'`` on a CSV with ``a|b`` labels: one-vs-all
  sigmoids, smoothed and weighted per label, scored as multi-label; no override needed."""
  rows = write_study(tmp_path / "ml", {"train": 6, "test": 3}, size=32)
  rows = [(p, f"{label}|tumour" if label == "cyst" and i % 2 else label, split)
          for i, (p, label, split) in enumerate(rows)]
  write_csv(tmp_path / "ml" / "labels.csv", rows)
  config = _irma(str(tmp_path / "ml" / "labels.csv"), tmp_path / "tfds")
  set_dotted(config, {"loss": "auto", "label_smoothing": 0.1, "class_balance": "loss",
                      "early_stopping.metric": "loss", "early_stopping.mode": "min",
                      "data.val_fraction": 0.2})
  results = trainer.train_and_evaluate(config, tmp_path / "w")
  assert results["train/loss_name"] == "sigmoid_xent" and results["config"]["loss"] == "auto"
  assert "test/exact_match" in results and "test/accuracy" not in results
  header = (tmp_path / "w" / "predictions" / "test.csv").read_text().splitlines()[0]
  assert "label/tumour" in header and "score/cyst" in header
  single = trainer.train_and_evaluate(set_dotted(_irma(str(study), tmp_path / "tfds"), {
      "loss": "auto", "early_stopping.metric": "loss", "early_stopping.mode": "min"}),
      tmp_path / "s")
  assert single["train/loss_name"] == "softmax_xent" and "test/accuracy" in single


@pytest.mark.slow
def test_frozen_features_on_a_multi_label_csv(tmp_path):
  """The README main command's pipeline on multi-label data: one binary SVM per label, each
  calibrated by its own temperature; predict gives the run's own test probabilities."""
  rows = write_study(tmp_path / "ml", {"train": 8, "test": 3}, size=32)
  rows = [(p, f"{label}|tumour" if label == "cyst" and i % 2 else label, split)
          for i, (p, label, split) in enumerate(rows)]
  write_csv(tmp_path / "ml" / "labels.csv", rows)
  config = set_dotted(vlad.get_config(f"dataset={tmp_path / 'ml' / 'labels.csv'},"
                                      f"aggregation=avgpool,scale=64"),
                      {"data.tfds_dir": str(tmp_path / "tfds"), "features.batch_size": 8})
  results = frozen.train_and_evaluate(config, tmp_path / "f")
  assert "test/exact_match" in results and "test/hamming_similarity/ci95_low" in results
  assert len(results["calibration/temperature"]) == 3
  assert results["calibration/method"].startswith("per-label temperature scaling")
  csv_rows = (tmp_path / "f" / "predictions" / "test.csv").read_text().splitlines()
  assert "label/tumour" in csv_rows[0] and len(csv_rows) == 10
  run = inference.load(tmp_path / "f")
  assert run.multi_label
  from medjax.eval import predictions
  p = predictions.read(tmp_path / "f" / "predictions" / "test.csv")
  paths = [tmp_path / "ml" / i for i in p.ids]
  scores, errors = inference.predict_files(run, paths, batch_size=8)
  assert not any(errors)
  np.testing.assert_allclose(scores, p.scores, atol=2e-5)  # Per-label sigmoids, as tested.
