"""Wide greyscale and TIFF as stored and decoded: a 12-bit X-ray in a 16-bit file is not
nearly black, TIFF (which TensorFlow cannot decode) trains, and predict reads the same."""
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from medjax import inference
from medjax.data import builders, images, ops


def ramp(top: int, size: int = 24) -> np.ndarray:
  return np.linspace(0, top, size * size).reshape(size, size).round().astype(np.uint16)


def decoded(data) -> np.ndarray:
  data = data if isinstance(data, bytes) else Path(data).read_bytes()
  example = ops.compose("decode(0)")({"image": tf.constant(data)}, tf.zeros([2], tf.int64))
  return example["image"].numpy()


@pytest.mark.parametrize("top, depth", [(255, 8), (1023, 10), (3000, 12), (4095, 12),
                                        (4096, 14), (65535, 16)])
def test_bit_depth_is_the_smallest_holding_the_brightest_pixel(top, depth):
  assert images.bit_depth(top) == depth


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_twelve_bit_grey_in_sixteen_bits_decodes_to_the_full_range(tmp_path, suffix):
  path = tmp_path / f"xray{suffix}"
  Image.fromarray(ramp(4095)).save(path)
  image = decoded(images.encoded(path))
  assert image.shape == (24, 24, 1)
  assert image.max() == pytest.approx(1.0) and image.mean() == pytest.approx(0.5, abs=0.01)
  # A darker image of the same detector keeps the detector's scale (not stretched to 1).
  Image.fromarray(ramp(3000)).save(path)
  assert decoded(images.encoded(path)).max() == pytest.approx(3000 / 4095, abs=1e-4)


def test_full_range_sixteen_bit_png_and_eight_bit_files_are_stored_as_they_are(tmp_path):
  Image.fromarray(ramp(40).astype(np.uint16) * 257).save(tmp_path / "widened.png")  # Dark.
  assert images.encoded(tmp_path / "widened.png") == tmp_path / "widened.png"
  Image.fromarray(ramp(65535)).save(tmp_path / "a.png")
  Image.fromarray(ramp(255).astype(np.uint8)).save(tmp_path / "b.png")
  assert images.encoded(tmp_path / "a.png") == tmp_path / "a.png"
  assert images.encoded(tmp_path / "b.png") == tmp_path / "b.png"


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_eight_bit_tiff_is_stored_as_the_same_pixels_in_png(tmp_path, mode):
  pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3) if mode == "RGB" else (24, 24),
                                             dtype=np.uint8)
  Image.fromarray(pixels, mode).save(tmp_path / "a.tiff")
  image = decoded(images.encoded(tmp_path / "a.tiff"))
  np.testing.assert_array_equal(np.rint(image * 255).astype(np.uint8).squeeze(), pixels)


def test_float_tiff_is_stretched_from_its_minimum_to_its_maximum(tmp_path):
  Image.fromarray(np.linspace(-1.5, 2.5, 24 * 24, dtype=np.float32).reshape(24, 24)).save(
      tmp_path / "f.tif")
  image = decoded(images.encoded(tmp_path / "f.tif"))
  assert image.min() == 0.0 and image.max() == pytest.approx(1.0)


def test_a_folder_of_twelve_bit_pngs_and_tiffs_is_prepared_and_predict_reads_it_alike(tmp_path):
  for name, top in (("dark", 2000), ("bright", 4095)):
    folder = tmp_path / "study" / "train" / name
    folder.mkdir(parents=True)
    for i in range(4):
      Image.fromarray(ramp(top)).save(folder / f"{i}.png")
      Image.fromarray(ramp(top)).save(folder / f"{i}.tif")
  builder = builders.get_builder(str(tmp_path / "study"), tfds_dir=str(tmp_path / "tfds"))
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  stored = {ex["id"].decode(): ex["image"] for ex in ds.as_numpy_iterator()}
  assert len(stored) == 16
  for key, data in stored.items():
    top = 2000 if "dark" in key else 4095  # One detector: one scale, 4095 white.
    assert decoded(data).max() == pytest.approx(top / 4095, abs=1e-4), key
    predicted_from, why = inference.read_image(tmp_path / "study" / key)
    assert not why and predicted_from == data, key


def test_uploaded_bytes_are_converted_as_files_are(tmp_path):
  Image.fromarray(ramp(4095)).save(tmp_path / "x.png")
  data = (tmp_path / "x.png").read_bytes()
  assert images.encoded_bytes(data) == images.encoded(tmp_path / "x.png") != data
  eight_bit = images.png(ramp(255).astype(np.uint8))
  assert images.encoded_bytes(eight_bit) == eight_bit
  assert images.encoded_bytes(b"not an image") == b"not an image"
