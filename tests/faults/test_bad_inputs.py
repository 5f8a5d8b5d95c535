"""Bad images are all reported before training starts, or skipped and counted; legitimate
variety (16-bit, RGBA) is decoded to the right intensities."""
import numpy as np
import pytest
from PIL import Image

from medjax import parallel
from medjax.data.pipeline import InputPipeline
from medjax.data.validate import BadDataError
from medjax.train import trainer
from tests.conftest import tiny_config, write_tiny_folder

BAD = ("blank/truncated.jpg", "blank/empty.png", "blob/notes.png", "blob/tiny.png")


@pytest.fixture(scope="module")
def salted_data_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("salted")
  root = data_dir / "image_folder"
  write_tiny_folder(root, {"train": 12, "test": 4})
  train = root / "train"
  Image.fromarray(np.full((40, 40), 120, np.uint8)).save(train / "blank" / "full.jpg")
  (train / "blank" / "truncated.jpg").write_bytes((train / "blank" / "full.jpg").read_bytes()[:200])
  (train / "blank" / "empty.png").write_bytes(b"")
  (train / "blob" / "notes.png").write_text("not an image, just text\n")
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(train / "blob" / "tiny.png")
  # Legitimate variety: a 16-bit grayscale PNG and an RGBA PNG, both uniform.
  Image.fromarray(np.full((32, 32), 30000, np.uint16)).save(train / "blank" / "sixteen.png")
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[..., :3], rgba[..., 3] = 200, 50
  Image.fromarray(rgba, "RGBA").save(train / "blank" / "rgba.png")
  return data_dir


def test_run_fails_before_training_naming_every_bad_file(salted_data_dir, tmp_path):
  config = tiny_config(salted_data_dir, tmp_path / "tfds", total_steps=2)
  with pytest.raises(BadDataError) as err:
    trainer.train_and_evaluate(config, tmp_path / "work")
  message = str(err.value)
  assert "4 bad file(s)" in message
  for name in BAD:
    assert name in message
  assert "sixteen.png" not in message and "rgba.png" not in message
  assert not (tmp_path / "work" / "checkpoints").exists()


@pytest.mark.slow
def test_skipping_finishes_and_counts_and_decodes_variety(salted_data_dir, tmp_path):
  config = tiny_config(salted_data_dir, tmp_path / "tfds", total_steps=2,
                       **{"data.on_bad_file": "skip", "data.val_fraction": 0.0})
  results = trainer.train_and_evaluate(config, tmp_path / "work")
  assert results["data/skipped"] == 4
  data = InputPipeline(config, tmp_path / "work", parallel.make_mesh())
  found = {}
  for batch, ids in data.eval_batches("train", batch_size=1, pp="decode(1)|resize(32)"):
    if ids and ids[0].endswith(("sixteen.png", "rgba.png")):
      found[ids[0].rsplit("/", 1)[-1]] = np.asarray(batch["image"])[0]
  np.testing.assert_allclose(found["sixteen.png"], 30000 / 65535, atol=1e-5)
  np.testing.assert_allclose(found["rgba.png"], 200 / 255, atol=1e-5)
  # Reusing the prepared copy in 'fail' mode still reports what was skipped.
  config.data.on_bad_file = "fail"
  with pytest.raises(BadDataError, match="were skipped when"):
    InputPipeline(config, tmp_path / "work2", parallel.make_mesh())
