"""medjax.export: a SavedModel that TensorFlow alone loads, taking encoded image bytes and
returning the scores medjax.predict gives."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from medjax import export, inference
from medjax.train import trainer
from tests.conftest import REPO_ROOT, tiny_config

pytestmark = pytest.mark.slow  # A trained run, a conversion and a TensorFlow subprocess.

TF_ONLY = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    paths = json.loads(sys.argv[2])
    images = tf.constant([open(p, "rb").read() for p in paths])
    scores = model.signatures["serving_default"](images=images)["scores"].numpy()
    assert "medjax" not in sys.modules
    print(json.dumps(scores.tolist()))
""")


def test_savedmodel_matches_medjax_predictions(tiny_data_dir, tmp_path):
  pp = "decode(1)|resize(32)|subtract_mean"
  config = tiny_config(tiny_data_dir, tmp_path / "tfds", total_steps=2, retrieval=False,
                       pp_eval=pp, pp_train=pp)
  trainer.train_and_evaluate(config, tmp_path / "run")
  run = inference.load(tmp_path / "run")
  out = export.export(run, tmp_path / "saved")
  assert (out / "classes.txt").read_text().split() == list(run.class_names)
  paths = sorted((tiny_data_dir / "image_folder" / "test").rglob("*.png"))[:5]
  want, errors = inference.predict_files(run, paths, batch_size=4)
  assert not any(errors)
  np.testing.assert_allclose(_tensorflow_scores(out, paths, tmp_path), want, atol=1e-5)


def _tensorflow_scores(saved, paths, tmp_path) -> np.ndarray:
  """The SavedModel's scores for ``paths``, from a process that has TensorFlow only."""
  env = dict(os.environ, PYTHONPATH="")
  result = subprocess.run([sys.executable, "-c", TF_ONLY, str(saved),
                           json.dumps([str(p) for p in paths])], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return np.array(json.loads(result.stdout.strip().splitlines()[-1]))


def test_a_clahe_run_exports_and_matches_medjax_predictions(tiny_data_dir, tmp_path):
  """CLAHE runs in Python in medjax; the SavedModel holds its graph form (every IRMA CNN
  run's preprocessing ends in clahe)."""
  pp = "decode(1)|resize(32)|clahe"
  config = tiny_config(tiny_data_dir, tmp_path / "tfds", total_steps=2, retrieval=False,
                       pp_eval=pp, pp_train=pp)
  trainer.train_and_evaluate(config, tmp_path / "run")
  run = inference.load(tmp_path / "run")
  assert "clahe" in run.pp
  out = export.export(run, tmp_path / "saved")
  paths = sorted((tiny_data_dir / "image_folder" / "test").rglob("*.png"))[:5]
  want, errors = inference.predict_files(run, paths, batch_size=4)
  assert not any(errors)
  np.testing.assert_allclose(_tensorflow_scores(out, paths, tmp_path), want, atol=1e-5)
