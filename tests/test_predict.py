"""medjax.predict gives a finished run's own test predictions on the image files, names
unreadable ones in an error row, and refuses unfinished runs in one line."""
import csv
import io
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from medjax import cli, inference, parallel, predict, runloop
from medjax.data.pipeline import InputPipeline
from medjax.train import step, trainer
from tests.conftest import REPO_ROOT, tiny_config

pytestmark = pytest.mark.slow  # Each test needs a trained run (about 30 s on 2 cores).


@pytest.fixture(scope="module")
def supervised_run(tiny_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(tiny_data_dir, tmp_path_factory.mktemp("tfds"), total_steps=2,
                       retrieval=False)
  trainer.train_and_evaluate(config, workdir)
  return workdir


def _run_test_split(workdir):
  """The run's own test-set scores, by id (through the trainer's evaluation)."""
  config = ml_collections.ConfigDict(json.loads((workdir / "results.json").read_text())["config"])
  data = InputPipeline(config, workdir, parallel.make_mesh())
  model = step.build_model(config, data.info.num_classes)
  variables = runloop.restore_trained(workdir, config)
  params = variables["params"]
  state = {k: v for k, v in variables.items() if k != "params"}
  _, out = trainer.evaluate(step.make_predict(model), params, state, data, "test", config.loss)
  probs = np.exp(out["logits"] - out["logits"].max(1, keepdims=True))
  return dict(zip(out["ids"], probs / probs.sum(1, keepdims=True)))


def test_predict_matches_the_runs_test_evaluation_and_reports_bad_files(
    supervised_run, tiny_data_dir, tmp_path):
  expected = _run_test_split(supervised_run)
  root = tiny_data_dir / "image_folder"
  ids = sorted(expected)
  truncated = tmp_path / "cut.png"
  truncated.write_bytes((root / ids[0]).read_bytes()[:120])
  paths = [root / i for i in ids[:5]] + [truncated] + [root / i for i in ids[5:]]
  run = inference.load(supervised_run)
  scores, errors = inference.predict_files(run, paths, batch_size=4)
  assert errors[5] and all(not e for i, e in enumerate(errors) if i != 5)
  text = predict.table(run, paths, [""] * len(paths), scores, errors)
  rows = list(csv.DictReader(io.StringIO(text)))
  assert rows[5]["path"] == str(truncated) and "truncated" in rows[5]["error"]
  assert rows[5]["predicted"] == ""
  good = [r for r in rows if not r["error"]]
  got = np.array([[float(r[f"score/{c}"]) for c in run.class_names] for r in good])
  want = np.array([expected[i] for i in ids])
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
  assert [r["predicted"] for r in good] == [run.class_names[k] for k in want.argmax(1)]


def test_unknown_class_in_an_input_csv_and_unfinished_runs_are_user_errors(
    supervised_run, tiny_data_dir, tmp_path):
  run = inference.load(supervised_run)
  path = tiny_data_dir / "image_folder" / "test" / "blob" / "blob_000.png"
  with pytest.raises(cli.UserError, match="'tumour'"):
    predict.table(run, [path], ["tumour"], np.zeros((1, 2)), [""])
  (tmp_path / "half").mkdir()
  with pytest.raises(cli.UserError, match="holds no finished run"):
    inference.load(tmp_path / "half")


def test_cli_writes_the_csv_and_refuses_a_missing_workdir(supervised_run, tiny_data_dir,
                                                           tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  folder = tiny_data_dir / "image_folder" / "test"
  out = subprocess.run([sys.executable, "-m", "medjax.predict", f"--workdir={supervised_run}",
                        f"--out={tmp_path / 'p.csv'}", str(folder)], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = list(csv.DictReader((tmp_path / "p.csv").open()))
  assert len(rows) == 16 and all(r["predicted"] in ("blank", "blob") for r in rows)
  out = subprocess.run([sys.executable, "-m", "medjax.predict", f"--workdir={tmp_path / 'no'}",
                        str(folder)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith("medjax.predict: error:")
