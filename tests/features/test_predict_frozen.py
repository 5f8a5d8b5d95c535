"""medjax.inference applies a finished frozen-feature run of any aggregation (VLAD, CAE,
the baselines, several scales) to image files and gives the run's own test predictions:
the aggregation's fitted state is saved to the workdir and loaded again."""
import csv

import numpy as np
import pytest

from medjax import inference
from medjax.features import aggregations, pipeline
from tests.features.test_extract import tiny_frozen_config
from tests.features.test_frozen_pipeline import SMALL


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("features")


@pytest.mark.slow  # Each case trains a frozen-feature run on the tiny folder.
@pytest.mark.parametrize("arg", ["aggregation=vlad", "aggregation=cae", "aggregation=ica",
                                 "aggregation=sparse_coding", "aggregation=ssae",
                                 "aggregation=avgpool,scales=64+48"])
def test_predict_matches_the_runs_own_test_predictions(tiny_data_dir, tfds_dir, features_dir,
                                                        tmp_path, arg):
  config = tiny_frozen_config(tiny_data_dir, tfds_dir, arg, features_dir=str(features_dir),
                              **SMALL)
  pipeline.train_and_evaluate(config, tmp_path)
  assert (tmp_path / aggregations.STATE_FILE).is_file()
  with (tmp_path / "predictions" / "test.csv").open() as f:
    rows = list(csv.DictReader(f))
  run = inference.load(tmp_path)
  names = run.class_names
  paths = [tiny_data_dir / "image_folder" / r["id"] for r in rows]
  scores, errors = inference.predict_files(run, paths, batch_size=8)
  assert not any(errors)
  want = np.array([[float(r[f"score/{c}"]) for c in names] for r in rows])
  np.testing.assert_allclose(scores, want, atol=1e-4)
  assert inference.predicted(run, scores) == [r["predicted"] for r in rows]


def test_a_run_without_its_saved_aggregation_is_refused_in_one_line(tmp_path):
  (tmp_path / "results.json").write_text(
      '{"config": {"pipeline": "frozen_features", "aggregation": "vlad", '
      '"data": {"name": "x"}}}')
  (tmp_path / "data.json").write_text('{"class_names": ["a", "b"], "multi_label": false}')
  with pytest.raises(inference.RunError, match="not found"):
    inference.load(tmp_path)
