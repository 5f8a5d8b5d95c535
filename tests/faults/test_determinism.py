"""Same config and seed -> byte-identical results; several seeds -> mean and std."""
import json

import pytest
from ml_collections import ConfigDict

from medjax import main
from medjax.eval import results as results_lib
from medjax.train import trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # Whole runs repeated to compare their bytes.


def test_same_seed_gives_byte_identical_results(tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=4)
  trainer.train_and_evaluate(config, tmp_path / "a")
  trainer.train_and_evaluate(config, tmp_path / "b")
  assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


def test_seeds_report_mean_and_std(tiny_data_dir, tfds_dir, tmp_path):
  config = tiny_config(tiny_data_dir, tfds_dir, total_steps=3, num_seeds=2, seed=5)
  results = main.run(config, str(tmp_path))
  per_seed = [json.loads((tmp_path / f"seed_{s}" / "results.json").read_text()) for s in (5, 6)]
  assert results["seeds"] == [5, 6]
  losses = [r["test/loss"] for r in per_seed]
  assert losses[0] != losses[1]  # Different seeds, different initialisations.
  assert results["test/loss/mean"] == pytest.approx(sum(losses) / 2)
  assert results["test/loss/std"] == pytest.approx(abs(losses[0] - losses[1]) / 2 ** 0.5)  # ddof 1.
  assert json.loads((tmp_path / "results.json").read_text())["seeds"] == [5, 6]


def test_a_measure_one_seed_leaves_undefined_is_averaged_over_the_others(tmp_path):
  config = ConfigDict({"seed": 0})
  per_seed = [{"config": {"seed": 0}, "test/accuracy": 0.5, "test/ppv/a": 0.25},
              {"config": {"seed": 1}, "test/accuracy": 0.7}]
  out = results_lib.over_seeds(per_seed, config, tmp_path)
  assert out["test/accuracy/mean"] == pytest.approx(0.6)
  assert out["test/ppv/a/mean"] == 0.25 and out["test/ppv/a/num_seeds"] == 1
  assert "test/accuracy/num_seeds" not in out


def test_frozen_feature_seeds_share_one_extraction(tiny_data_dir, tfds_dir, tmp_path):
  """Seeds of a frozen-feature config vary what is fitted (here ICA's initialisation) on
  features extracted once, under the workdir, for all of them."""
  from tests.features.test_extract import tiny_frozen_config
  config = tiny_frozen_config(tiny_data_dir, tfds_dir, "aggregation=ica,seeds=2",
                              **{"baseline.components": 4})
  results = main.run(config, str(tmp_path))
  assert results["seeds"] == [0, 1]
  assert (tmp_path / "features").is_dir()
  assert not any((tmp_path / f"seed_{s}" / "features").exists() for s in (0, 1))
  per_seed = [json.loads((tmp_path / f"seed_{s}" / "results.json").read_text()) for s in (0, 1)]
  assert [r["config"]["seed"] for r in per_seed] == [0, 1]
  assert results["test/accuracy/mean"] == pytest.approx(
      (per_seed[0]["test/accuracy"] + per_seed[1]["test/accuracy"]) / 2)
