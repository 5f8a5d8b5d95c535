"""medjax.explain: one overlay per image at the image's size for every method, and the
model-randomisation sanity check of Adebayo et al. (2018)."""
import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from medjax import cli, inference
from medjax.explain import methods
from medjax.explain.__main__ import explain_files
from medjax.train import step, trainer
from tests.conftest import TINY_TASK, tiny_config

pytestmark = pytest.mark.slow  # A trained run first (about a minute on 2 cores).


@pytest.fixture(scope="module")
def trained(tiny_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(tiny_data_dir, tmp_path_factory.mktemp("tfds"), retrieval=False,
                       **TINY_TASK)
  results = trainer.train_and_evaluate(config, workdir)
  assert results["test/accuracy"] >= 0.8, "the tiny task must be learnt for the check to mean anything"
  return inference.load(workdir)


def _blob_images(run, tiny_data_dir, n=4):
  folder = tiny_data_dir / "image_folder" / "test" / "blob"
  paths = sorted(folder.iterdir())[:n]
  return paths, [run.preprocess(p.read_bytes()) for p in paths]


def test_every_method_writes_an_overlay_at_the_images_size(trained, tiny_data_dir, tmp_path):
  paths, _ = _blob_images(trained, tiny_data_dir, n=2)
  big = tmp_path / "big.png"  # Not the network's input size: the overlay follows the file.
  Image.open(paths[0]).resize((70, 50)).save(big)
  for method in methods.METHODS:
    written = explain_files(trained, [*paths, big], tmp_path / "out", method)
    assert len(written) == 3
    peaks = []
    for image, overlay in zip([*paths, big], written):
      assert Image.open(overlay).size == Image.open(image).size
      assert overlay.name == f"{image.stem}.{method}.png"
      heat = np.load(overlay.with_suffix(".npy"))
      assert heat.shape == trained.preprocess(image.read_bytes()).shape[:2]
      assert np.isfinite(heat).all() and heat.min() >= 0
      peaks.append(heat.max())
    assert max(peaks) > 0, method  # A map may be all zero (Grad-CAM's ReLU), not every one.
  with pytest.raises(cli.UserError, match="no spatial output"):
    explain_files(trained, paths[:1], tmp_path / "out", "gradcam", layer="nope")


def test_maps_of_a_trained_model_differ_from_those_of_random_weights(trained, tiny_data_dir):
  """Adebayo et al. 2018: a method whose maps survive randomising the weights explains the
  image, not the model. Rank correlation of trained vs. random maps must be low, while the
  same model's maps of the same image agree with themselves."""
  model = step.build_model(trained.config, len(trained.class_names))
  _, images = _blob_images(trained, tiny_data_dir)
  randomised = model.init(jax.random.PRNGKey(123), images[0][None])
  random_run = dataclasses.replace(trained, variables={**trained.variables, **randomised})
  for method in methods.METHODS:
    correlations = []
    for image in images:
      k = trained.class_names.index("blob")
      mine = methods.explain(trained, image, k, method)
      again = methods.explain(trained, image, k, method)
      other = methods.explain(random_run, image, k, method)
      assert stats.spearmanr(mine.ravel(), again.ravel())[0] > 0.99
      rho = stats.spearmanr(mine.ravel(), other.ravel())[0]
      correlations.append(0.0 if np.isnan(rho) else abs(rho))
    assert np.mean(correlations) < 0.5, (method, correlations)
