"""Property-based tests of the preprocessing ops on random shapes, channels and bit depths."""
import io

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings, strategies as st
from PIL import Image

from medjax.data import ops

SETTINGS = settings(max_examples=25, deadline=None)
shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


def apply(pp, image, seed=(0, 0)):
  fn = ops.compose(pp)
  return fn({"image": tf.constant(image)}, tf.constant(seed, tf.int64))["image"].numpy()


@st.composite
def encoded_png(draw):
  h, w = draw(shapes)
  mode = draw(st.sampled_from(["L", "I;16", "RGB", "RGBA"]))
  dtype = np.uint16 if mode == "I;16" else np.uint8
  channels = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}[mode]
  seed = draw(st.integers(0, 2**31 - 1))
  pixels = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, (h, w, channels),
                                                dtype=dtype, endpoint=True)
  buf = io.BytesIO()
  image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
  assert image.mode == mode
  image.save(buf, format="PNG")
  return buf.getvalue(), pixels


@SETTINGS
@given(encoded_png(), st.sampled_from([1, 3]))
def test_decode_gives_unit_range_float_of_the_right_shape(png, channels):
  data, pixels = png
  out = apply(f"decode({channels})", data)
  assert out.dtype == np.float32 and out.shape == (*pixels.shape[:2], channels)
  assert out.min() >= 0.0 and out.max() <= 1.0
  if pixels.shape[-1] == 1 and channels == 1:  # Gray stays exact at any bit depth.
    np.testing.assert_allclose(out[..., 0], pixels[..., 0] / np.iinfo(pixels.dtype).max, atol=1e-6)


images = st.builds(
    lambda hw, c, seed: np.random.default_rng(seed).uniform(0, 1, (*hw, c)).astype(np.float32),
    shapes, st.sampled_from([1, 3]), st.integers(0, 2**31 - 1))


@SETTINGS
@given(images)
def test_pad_to_square_keeps_the_image_centred_on_black(image):
  out = apply("pad_to_square", image)
  h, w, _ = image.shape
  side = max(h, w)
  assert out.shape == (side, side, image.shape[-1])
  top, left = (side - h) // 2, (side - w) // 2
  np.testing.assert_array_equal(out[top:top + h, left:left + w], image)
  out[top:top + h, left:left + w] = 0
  assert not out.any()  # Everything else is black.


@SETTINGS
@given(images, st.integers(1, 48))
def test_resize_hits_the_size_and_stays_in_range(image, size):
  out = apply(f"resize({size})", image)
  assert out.shape == (size, size, image.shape[-1])
  assert out.min() >= image.min() - 1e-5 and out.max() <= image.max() + 1e-5


@SETTINGS
@given(images, st.integers(0, 1000))
def test_rot90_and_crop_only_move_pixels(image, seed):
  rotated = apply("random_rot90", image, (seed, 1))
  assert sorted(rotated.shape[:2]) == sorted(image.shape[:2])
  np.testing.assert_array_equal(np.sort(rotated, axis=None), np.sort(image, axis=None))
  size = min(image.shape[:2])
  crop = apply(f"random_crop({size})", image, (seed, 2))
  assert crop.shape == (size, size, image.shape[-1])
  windows = np.lib.stride_tricks.sliding_window_view(image, crop.shape)
  assert (windows == crop).all(axis=(-3, -2, -1)).any()


@pytest.mark.slow
@SETTINGS
# A few sizes (even, odd, both orientations): XLA compiles the op once per image size, about
# a second each, and tests/data/test_clahe.py checks other sizes against scikit-image.
@given(st.sampled_from([(16, 16), (17, 40), (40, 23), (31, 31)]), st.integers(0, 2**31 - 1))
def test_clahe_stays_in_unit_range(hw, seed):
  image = np.random.default_rng(seed).uniform(0, 1, (*hw, 1)).astype(np.float32)
  out = apply("clahe", image)
  assert out.shape == image.shape and out.min() >= 0.0 and out.max() <= 1.0
