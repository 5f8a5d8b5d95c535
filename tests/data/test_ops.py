"""Preprocessing ops: exact values on small arrays, bit depths, determinism, errors."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from medjax.data import ops

SEED = tf.constant([0, 7], tf.int64)


def png_bytes(array, mode=None) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array, mode=mode).save(buf, format="PNG")
  return buf.getvalue()


def run(pp, image=None, data=None, context=None, seed=SEED):
  example = {"image": tf.constant(data) if data is not None else tf.constant(image, tf.float32)}
  return ops.compose(pp, context)(example, seed)["image"].numpy()


def test_decode_scales_by_bit_depth():
  a16 = np.array([[0, 65535], [32768, 1000]], np.uint16)
  a8 = np.array([[0, 255], [128, 4]], np.uint8)
  np.testing.assert_allclose(run("decode(1)", data=png_bytes(a16))[..., 0], a16 / 65535, atol=1e-6)
  np.testing.assert_allclose(run("decode(1)", data=png_bytes(a8))[..., 0], a8 / 255, atol=1e-6)


def test_decode_rgba_palette_and_gray_consistently():
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 10  # Alpha must not leak into the colour.
  out = run("decode(3)", data=png_bytes(rgba, "RGBA"))
  np.testing.assert_allclose(out[..., 0], 200 / 255, atol=1e-6)
  assert out.shape == (4, 4, 3)
  pal = Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).convert("P")
  buf = io.BytesIO()
  pal.save(buf, format="PNG")
  np.testing.assert_allclose(run("decode(3)", data=buf.getvalue()),
                             np.asarray(pal.convert("RGB")) / 255, atol=1e-6)
  gray = run("decode(3)", data=png_bytes(np.full((4, 4), 50, np.uint8)))
  np.testing.assert_allclose(gray, 50 / 255, atol=1e-6)


def test_pad_to_square_centres_on_black():
  image = np.ones((2, 4, 1), np.float32)
  out = run("pad_to_square", image)
  assert out.shape == (4, 4, 1)
  np.testing.assert_array_equal(out[:, :, 0], [[0] * 4, [1] * 4, [1] * 4, [0] * 4])


def test_resize_take_channel_and_rgb():
  image = np.stack([np.full((8, 6), v, np.float32) for v in (0.1, 0.5, 0.9)], -1)
  out = run("resize(4)|take_channel(0)", image)
  assert out.shape == (4, 4, 1)
  np.testing.assert_allclose(out, 0.1, atol=1e-6)
  assert run("take_channel(0)|gray_to_rgb", image).shape == (8, 6, 3)


def test_clahe_matches_scikit_image():
  from skimage import exposure
  rng = np.random.default_rng(0)
  image = rng.uniform(0.2, 0.4, (64, 64, 1)).astype(np.float32)
  expected = exposure.equalize_adapthist(image, clip_limit=0.02)
  np.testing.assert_allclose(run("clahe(clip_limit=0.02)", image), expected, atol=1e-5)
  # Several channels: each is equalised as its own 2-D image (the docstring's promise).
  image = rng.uniform(0.0, 1.0, (64, 48, 3)).astype(np.float32) ** np.array([1, 2, 3])
  expected = np.stack([exposure.equalize_adapthist(image[..., c], clip_limit=0.02)
                       for c in range(3)], -1)
  np.testing.assert_allclose(run("clahe(clip_limit=0.02)", image), expected, atol=1e-5)


def test_subtract_mean_uses_context_and_requires_it():
  image = np.full((2, 2, 1), 0.5, np.float32)
  mean = np.full((2, 2, 1), 0.2, np.float32)
  np.testing.assert_allclose(run("subtract_mean", image, context={"mean_image": mean}), 0.3)
  with pytest.raises(ValueError, match="needs the training mean image"):
    ops.compose("subtract_mean")


def test_random_ops_are_deterministic_per_seed_and_vary_across_seeds():
  image = np.arange(36, dtype=np.float32).reshape(6, 6, 1)
  a = run("random_rot90|random_crop(4)", image, seed=tf.constant([1, 2], tf.int64))
  b = run("random_rot90|random_crop(4)", image, seed=tf.constant([1, 2], tf.int64))
  np.testing.assert_array_equal(a, b)
  outs = {run("random_rot90", image, seed=tf.constant([1, i], tf.int64)).tobytes() for i in range(20)}
  assert len(outs) == 4  # 0, 90, 180 and 270 degrees all occur.


def test_normalisations():
  image = np.array([[[0.0, 0.5, 1.0]]], np.float32)
  np.testing.assert_allclose(run("normalize('efficientnet_lite')", image), [[[-127 / 128, 0.5 / 128 * 1, 1.0]]],
                             atol=1e-6)
  np.testing.assert_allclose(run("normalize('caffe')", image),
                             [[[255 - 103.939, 127.5 - 116.779, 0 - 123.68]]], atol=1e-4)


@pytest.mark.parametrize("spec, message", [
    ("nonsense", "unknown"), ("resize(size=)", "resize"), ("resize(os.system)", "literals"),
    ("normalize('foo')", "expected one of")])
def test_bad_specs_name_the_op(spec, message):
  with pytest.raises(ValueError, match=message):
    ops.compose(spec)


def test_radiograph_augmentations_are_bounded_seeded_and_vary():
  rng = np.random.default_rng(0)
  image = rng.uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
  pp = ("random_resized_crop(24, scale=(0.6, 1.0))|random_affine(degrees=7.0, translate=0.05)"
        "|random_brightness_contrast(0.1, 0.1)")
  a, b = run(pp, image), run(pp, image)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (24, 24, 3) and 0.0 <= a.min() and a.max() <= 1.0
  outs = [run(pp, image, seed=tf.constant([3, i], tf.int64)) for i in range(4)]
  assert len({o.tobytes() for o in outs}) == 4
  # Zero rotation and shift is the identity; a full-area crop of the same aspect is a resize.
  np.testing.assert_allclose(run("random_affine(degrees=0.0, translate=0.0)", image), image,
                             atol=1e-6)
  full = run("random_resized_crop(32, scale=(1.0, 1.0), ratio=(1.0, 1.0))", image)
  np.testing.assert_allclose(full, image, atol=1e-5)
  # Brightness only: a constant added to every pixel.
  shifted = run("random_brightness_contrast(0.1, 0.0)", image)
  delta = shifted - image
  np.testing.assert_allclose(delta, delta.flat[0], atol=1e-6)
  assert 0 < abs(delta.flat[0]) <= 0.1
  flips = {run("random_flip", image, seed=tf.constant([0, i], tf.int64)).tobytes() for i in range(10)}
  assert flips == {image.tobytes(), image[:, ::-1].tobytes()}


def test_split_at_context_cuts_before_the_first_op_needing_training_statistics():
  assert ops.split_at_context("decode(1)|resize(32)|clahe|subtract_mean|random_rot90") == (
      "decode(1)|resize(32)|clahe", "subtract_mean|random_rot90")
  assert ops.split_at_context("decode(1)|resize(32)") == ("decode(1)|resize(32)", "")


# One spec per registered op, on a float image of unknown size (``decode`` on PNG bytes).
EVERY_OP = {
    "decode": "decode(1)", "pad_to_square": "pad_to_square", "resize": "resize(8)",
    "resize_pack": "resize_pack((8, 4))", "resize_short": "resize_short(8)",
    "take_channel": "take_channel(0)", "gray_to_rgb": "take_channel(0)|gray_to_rgb",
    "clahe": "resize(8)|clahe", "subtract_mean": "resize(8)|subtract_mean",
    "random_rot90": "resize(8)|random_rot90", "random_crop": "random_crop(4, pad=1)",
    "central_crop": "central_crop(4)", "normalize": "normalize",
    "random_resized_crop": "random_resized_crop(8)", "random_affine": "random_affine",
    "random_brightness_contrast": "random_brightness_contrast", "random_flip": "random_flip",
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "clahe"
                                  else name for name in sorted(EVERY_OP)])
def test_every_op_traces_in_tf_data_without_autograph(name):
  """Pipelines trace their functions as written (``ops.traced``, no AutoGraph rewriting), so
  an op must branch on tensors with ``tf.cond``: a Python ``if`` on a tensor fails here."""
  assert sorted(EVERY_OP) == ops.names()
  spec = EVERY_OP[name]
  fn = ops.compose(spec, {"mean_image": np.zeros((8, 8, 3), np.float32)})
  image = np.random.default_rng(0).uniform(size=(10, 12, 3)).astype(np.float32)
  if name == "decode":
    source = tf.data.Dataset.from_tensors(png_bytes((image[..., 0] * 255).astype(np.uint8)))
  else:
    source = tf.data.Dataset.from_generator(
        lambda: iter([image]), output_signature=tf.TensorSpec([None, None, 3], tf.float32))
  ds = source.map(ops.traced(lambda x: fn({"image": x}, SEED)["image"]))
  (out,) = list(ds.as_numpy_iterator())
  assert out.ndim == 3 and np.isfinite(out).all()
  # And to the bit what the same ops give eagerly (see the next test).
  first = source.take(1).get_single_element()
  np.testing.assert_array_equal(out, fn({"image": first}, SEED)["image"].numpy())


def test_tf_data_runs_the_ops_as_written():
  """A parallel tf.data map gives what the ops give eagerly, bit for bit. Grappler's
  arithmetic rewrites regrouped ``t + mean + delta`` into an AddN that sums from whichever
  input buffer it can reuse, so the same seed gave images a float32 step apart from run to
  run (``ops.as_written``); regrouped sums also differ from eager ones, which this catches."""
  pp = ("random_resized_crop(24, scale=(0.65, 1.0))|random_affine(degrees=7.0, translate=0.05)"
        "|random_brightness_contrast(0.1, 0.15)|normalize('efficientnet_lite')")
  fn = ops.compose(pp)
  images = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
  ds = tf.data.Dataset.from_tensor_slices(images).enumerate().map(
      ops.traced(lambda i, x: fn({"image": x}, tf.stack([tf.constant(0, tf.int64), i]))["image"]),
      num_parallel_calls=4, deterministic=True)
  got = np.stack(list(ds.as_numpy_iterator()))
  want = np.stack([fn({"image": tf.constant(x)}, tf.constant([0, i], tf.int64))["image"].numpy()
                   for i, x in enumerate(images)])
  np.testing.assert_array_equal(got, want)


def test_tf_runtime_says_once_when_tensorflow_started_too_early(monkeypatch, caplog):
  from medjax.data import tf_runtime
  monkeypatch.setattr(tf_runtime, "_state", {"as_written": False, "warned": False})
  monkeypatch.setattr(tf_runtime, "_started", lambda: True)
  set_options = []
  monkeypatch.setattr(tf.config.optimizer, "set_experimental_options", set_options.append)
  with caplog.at_level("WARNING"):
    tf_runtime.run_graphs_as_written()
    tf_runtime.run_graphs_as_written()
  assert not set_options  # Too late to take effect: not pretended.
  assert len([r for r in caplog.records if "tf_runtime.configure()" in r.getMessage()]) == 1
  monkeypatch.setattr(tf_runtime, "_started", lambda: False)
  tf_runtime.run_graphs_as_written()
  assert set_options == [{"arithmetic_optimization": False}]
