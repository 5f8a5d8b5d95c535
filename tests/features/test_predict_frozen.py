"""medjax.inference applies a finished frozen-feature run of several scales to image files
and gives the run's own test predictions. (Each single-scale aggregation's run is checked
the same way where it is trained: tests/features/test_frozen_pipeline.py.)"""
import pytest

from medjax import inference
from medjax.features import pipeline
from tests.features.test_extract import tiny_frozen_config
from tests.features.test_frozen_pipeline import (
    SMALL, assert_predict_gives_the_runs_own_test_predictions)


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("features")


@pytest.mark.slow  # Trains a frozen-feature run on the tiny folder at two scales.
def test_predict_matches_the_runs_own_test_predictions_at_two_scales(
    tiny_data_dir, tfds_dir, features_dir, tmp_path):
  config = tiny_frozen_config(tiny_data_dir, tfds_dir, "aggregation=avgpool,scales=64+48",
                              features_dir=str(features_dir), **SMALL)
  pipeline.train_and_evaluate(config, tmp_path)
  assert_predict_gives_the_runs_own_test_predictions(tmp_path, tiny_data_dir)


def test_a_run_without_its_saved_aggregation_is_refused_in_one_line(tmp_path):
  (tmp_path / "results.json").write_text(
      '{"config": {"pipeline": "frozen_features", "aggregation": "vlad", '
      '"data": {"name": "x"}}}')
  (tmp_path / "data.json").write_text('{"class_names": ["a", "b"], "multi_label": false}')
  with pytest.raises(inference.RunError, match="not found"):
    inference.load(tmp_path)
