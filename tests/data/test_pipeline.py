"""The input pipeline: reproducible holdout, exact evaluation, resumable training stream."""
import numpy as np
import pytest

from medjax import parallel
from medjax.data.pipeline import InputPipeline, stratified_holdout
from tests.conftest import tiny_config


def test_stratified_holdout_is_per_class_reproducible_and_order_free():
  ids = np.array([f"img{i:03d}" for i in range(100)], dtype=object)
  labels = np.array([0] * 70 + [1] * 30)
  held = stratified_holdout(ids, labels, 0.1, seed=3)
  assert sum(labels[int(i[3:])] == 0 for i in held) == 7
  assert sum(labels[int(i[3:])] == 1 for i in held) == 3
  perm = np.random.default_rng(0).permutation(100)
  assert stratified_holdout(ids[perm], labels[perm], 0.1, seed=3) == held
  assert stratified_holdout(ids, labels, 0.1, seed=4) != held


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_data_dir, tfds_dir, tmp_path_factory):
  config = tiny_config(tiny_data_dir, tfds_dir)
  return InputPipeline(config, tmp_path_factory.mktemp("work"), parallel.make_mesh())


def test_split_sizes_and_classes(tiny_pipeline):
  info = tiny_pipeline.info
  assert info.class_names == ("blank", "blob")
  # 48 training images, 10 % stratified holdout -> round(2.4) = 2 per class.
  assert info.split_sizes == {"train": 44, "val": 4, "test": 16}


def test_eval_is_exact_with_padding_mask(tiny_pipeline):
  batches = list(tiny_pipeline.eval_batches("test", batch_size=6))
  assert len(batches) == 3  # 16 examples -> 6 + 6 + 4 (padded to 6).
  masks = np.concatenate([np.asarray(b["mask"]) for b, _ in batches])
  assert masks.sum() == 16 and masks[-2:].sum() == 0
  ids = [i for _, batch_ids in batches for i in batch_ids]
  assert len(ids) == len(set(ids)) == 16


def test_train_stream_resumes_exactly(tiny_pipeline):
  it = tiny_pipeline.train_iterator(0)
  first = [next(it) for _ in range(9)]  # Crosses an epoch boundary (5 steps per epoch).
  resumed = tiny_pipeline.train_iterator(6)
  for expected in first[6:]:
    got = next(resumed)
    np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(expected["image"]))
    np.testing.assert_array_equal(np.asarray(got["label"]), np.asarray(expected["label"]))
  # Epochs are reshuffled (and re-augmented): epoch 2 does not repeat epoch 1.
  assert not np.array_equal(np.asarray(first[0]["image"]), np.asarray(first[5]["image"]))


def test_mean_image_is_training_mean_and_stored(tiny_pipeline):
  mean = tiny_pipeline._context["mean_image"]
  assert mean.shape == (32, 32, 1)
  stored = np.load(tiny_pipeline.workdir / "mean_image.npy")
  np.testing.assert_array_equal(mean, stored)


@pytest.mark.slow
def test_chest_xray_paper_split(shared_data, tfds_dir, tmp_path):
  from configs import irma_cnn
  config = irma_cnn.get_config("dataset=chest_xray")
  config.data.manual_dir = str(shared_data)
  config.data.tfds_dir = str(tfds_dir)
  config.data.val_fraction = 0.0
  config.pp_eval = config.pp_train = "decode(1)|resize(32)"
  data = InputPipeline(config, tmp_path, parallel.make_mesh())
  assert data.info.split_sizes == {"train": 5232, "test": 624}
  assert data.info.class_names == ("NORMAL", "PNEUMONIA")


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.mkdir(parents=True)], ids=["missing", "empty"])
def test_missing_or_empty_dataset_folder_is_one_line_naming_it(tmp_path, make):
  from medjax.data import builders, validate
  make(tmp_path / "data" / "kvasir")
  with pytest.raises(validate.MissingSource) as raised:
    builders.get_builder("kvasir", manual_dir=str(tmp_path / "data"), tfds_dir=str(tmp_path / "t"))
  message = str(raised.value)
  assert "\n" not in message and str(tmp_path / "data" / "kvasir") in message
  assert message.startswith("config.data.name='kvasir': ") and "does not exist or is empty" in message


def test_cached_training_stream_shares_the_statistics_pass_and_keeps_its_batches(
    tiny_data_dir, tfds_dir, tmp_path):
  """The mean-image pass fills the cache the training stream reads (decode and CLAHE run once
  per image), and the mean subtracted after the cache gives the batches of an uncached run."""
  streams = {}
  for cache in ("preprocessed", "none"):
    config = tiny_config(tiny_data_dir, tfds_dir)
    config.data.cache = cache
    data = InputPipeline(config, tmp_path / cache, parallel.make_mesh())
    it = data.train_iterator(0)
    streams[cache] = [next(it) for _ in range(7)]
    if cache == "preprocessed":
      assert list(data._preprocessed) == [(id(data._split_ds["train"]), "decode(1)|resize(32)|clahe")]
  for a, b in zip(*streams.values()):
    np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
    np.testing.assert_array_equal(np.asarray(a["label"]), np.asarray(b["label"]))
