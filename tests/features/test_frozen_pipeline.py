"""The frozen-feature pipeline end to end on the tiny image folder, one run per aggregation,
plus the resumability of its two trained stages (k-means, CAE); each finished run also
predicts its own test images through ``medjax.inference``.

Runs share one features folder, so the backbone's maps are extracted once for the module
(pooled features once more); the real EfficientNet-Lite0 runs at 64 px (2x2x1280 maps).
"""
import csv
import json

import jax
import numpy as np
import pytest

from medjax import inference, parallel
from medjax.features import aggregations, pipeline
from medjax.features.aggregations import cae as cae_aggregation
from tests.features.test_extract import tiny_frozen_config


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("features")


def run(tiny_data_dir, tfds_dir, features_dir, workdir, arg, **overrides):
  config = tiny_frozen_config(tiny_data_dir, tfds_dir, arg, features_dir=str(features_dir),
                              **overrides)
  return pipeline.train_and_evaluate(config, workdir)


SMALL = {"vlad.k": 4, "vlad.descriptor_dims": 16, "vlad.pca_dims": 8, "cae.filters": 8,
         "cae.num_epochs": 2, "cae.batch_size": 16, "baseline.components": 4,
         "ssae.hidden": (8, 4), "ssae.max_iter": 20}


@pytest.mark.parametrize("aggregation, dims", [
    ("avgpool", 1280), pytest.param("vlad", 8, marks=pytest.mark.slow),
    pytest.param("cae", 8, marks=pytest.mark.slow),
    pytest.param("sparse_coding", 4, marks=pytest.mark.slow),
    pytest.param("ica", 4, marks=pytest.mark.slow),
    pytest.param("ssae", 4, marks=pytest.mark.slow)])
def test_each_aggregation_end_to_end(tiny_data_dir, tfds_dir, features_dir, tmp_path,
                                     aggregation, dims):
  results = run(tiny_data_dir, tfds_dir, features_dir, tmp_path, f"aggregation={aggregation}",
                **SMALL)
  assert results["backbone/requested"] == "vgg19"
  assert results["backbone/used"] == "efficientnet_lite0" and results["backbone/fallback_reason"]
  assert results["features/dims"] == dims
  assert 0.0 <= results["test/accuracy"] <= 1.0 and results["test/num_examples"] == 16
  assert set(results) >= {"test/recall/blank", "test/recall/blob", "test/confusion_matrix",
                          "train/accuracy", "svm/iterations", "config"}
  assert results["svm/converged"] == 1.0
  stored = json.loads((tmp_path / "results.json").read_text())
  assert stored["test/accuracy"] == results["test/accuracy"]
  assert stored["config"]["aggregation"] == aggregation
  lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines[-1]["test/accuracy"] == results["test/accuracy"]
  if aggregation == "cae":  # One line per epoch, then the results at the last step.
    assert [line.get("cae/epoch") for line in lines[:-1]] == [1, 2]
    assert lines[-1]["step"] == lines[-2]["step"] == results["cae/steps"] == 6
    assert (tmp_path / "cae" / "checkpoints").is_dir()
  # A rerun returns the finished results without redoing anything.
  assert run(tiny_data_dir, tfds_dir, features_dir, tmp_path, f"aggregation={aggregation}",
             **SMALL) == stored
  if aggregation != "avgpool":  # Average pooling's: tests/features/test_predict_frozen.py.
    assert_predict_gives_the_runs_own_test_predictions(tmp_path, tiny_data_dir)


def assert_predict_gives_the_runs_own_test_predictions(workdir, tiny_data_dir):
  """medjax.inference applies the finished run, with the aggregation's fitted state saved
  to the workdir and loaded again, to the test image files."""
  assert (workdir / aggregations.STATE_FILE).is_file()
  with (workdir / "predictions" / "test.csv").open() as f:
    rows = list(csv.DictReader(f))
  run_ = inference.load(workdir)
  paths = [tiny_data_dir / "image_folder" / r["id"] for r in rows]
  scores, errors = inference.predict_files(run_, paths, batch_size=8)
  assert not any(errors)
  want = np.array([[float(r[f"score/{c}"]) for c in run_.class_names] for r in rows])
  np.testing.assert_allclose(scores, want, atol=1e-4)
  assert inference.predicted(run_, scores) == [r["predicted"] for r in rows]


def test_avgpool_separates_the_tiny_classes(tiny_data_dir, tfds_dir, features_dir, tmp_path):
  results = run(tiny_data_dir, tfds_dir, features_dir, tmp_path, "aggregation=avgpool")
  assert results["train/accuracy"] == 1.0 and results["test/accuracy"] >= 0.75


@pytest.mark.slow
def test_a_run_without_test_split_evaluates_on_the_stratified_holdout(
    tiny_data_dir, tfds_dir, tmp_path):
  # Its own features folder: the shared one holds features of the whole train split.
  results = run(tiny_data_dir, tfds_dir, tmp_path / "features", tmp_path, "aggregation=avgpool",
                **{"data.test_split": "", "data.val_fraction": 0.25})
  assert results["test/num_examples"] == 12 and results["train/num_examples"] == 36
  assert "holdout" in results["test/split"]


@pytest.mark.slow
def test_cae_training_resumes_from_its_checkpoint(tmp_path):
  from configs import cae_imageclef16
  cfg = cae_imageclef16.cae_fields()
  cfg.update({"filters": 4, "batch_size": 8, "num_epochs": 3})
  cfg.optimizer.learning_rate = 1e-3
  maps = np.random.default_rng(0).uniform(size=(20, 4, 4, 3)).astype(np.float32)

  def train(workdir, epochs):
    cfg.num_epochs = epochs
    stage = aggregations.Stage(config=None, workdir=workdir, folders={}, mesh=parallel.make_mesh())
    params, steps = cae_aggregation.train(cfg, maps, seed=0, stage=stage)
    stage.writer.close()
    return params, steps

  straight, steps = train(tmp_path / "straight", 3)
  train(tmp_path / "resumed", 1)
  resumed, resumed_steps = train(tmp_path / "resumed", 3)
  assert steps == resumed_steps == 6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), resumed, straight)
  losses = [json.loads(line)["cae/loss"] for line in
            (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  assert len(losses) == 3 and losses[-1] < losses[0]


@pytest.mark.parametrize("above, vlad_dims", [
    pytest.param(512, 4 * 16, marks=pytest.mark.slow),
    pytest.param(1280, 4 * 1280, marks=pytest.mark.slow)])
def test_descriptor_pca_only_for_descriptors_wider_than_the_threshold(
    tiny_data_dir, tfds_dir, features_dir, tmp_path, above, vlad_dims):
  # EfficientNet-Lite0's 1280-d descriptors: reduced to 16 above 512, kept at 1280 (as
  # VGG19's 512-d ones are by default) when the threshold is not below them.
  results = run(tiny_data_dir, tfds_dir, features_dir, tmp_path, "aggregation=vlad",
                **{**SMALL, "vlad.descriptor_pca_above": above})
  assert results["vlad/dims"] == vlad_dims


def test_cae_training_stops_once_its_loss_has_converged(tmp_path):
  from configs import cae_imageclef16
  cfg = cae_imageclef16.cae_fields()
  cfg.update({"filters": 4, "batch_size": 10, "num_epochs": 50, "converge_rtol": 0.5,
              "converge_patience": 2})
  maps = np.random.default_rng(0).uniform(size=(20, 4, 4, 3)).astype(np.float32)
  stage = aggregations.Stage(config=None, workdir=tmp_path, folders={}, mesh=parallel.make_mesh())
  _, steps = cae_aggregation.train(cfg, maps, seed=0, stage=stage)
  stage.writer.close()
  # Two steps an epoch; at lr 1e-5 no two epochs improve the loss by half: stop at epoch 3.
  assert steps == 3 * 2


def test_a_named_weights_file_that_is_missing_is_an_error_not_a_fallback(tmp_path):
  from configs import vlad
  from medjax import cli
  backbone = vlad.get_config("dataset=chest_xray").backbone
  backbone.weights = str(tmp_path / "nosuch.h5")
  with pytest.raises(cli.UserError, match=r"config.backbone.weights=.*nosuch.h5"):
    pipeline.load_backbone(backbone)
