"""Keras HDF5 import: the published SqueezeNet v1.1 file against tf.keras, and a VGG19
round trip through files written by tf.keras (keras 3)."""
import os
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from medjax.data import ops
from medjax.weights import load
from medjax import classify
from medjax.weights import keras_h5, maps

SQUEEZENET_H5 = "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _shared_data() -> Path:
  env = os.environ.get("MEDJAX_DATA_DIR")
  return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def squeezenet_h5() -> Path:
  path = _shared_data() / "pretrained" / SQUEEZENET_H5
  if not path.is_file():
    pytest.skip(f"{path} not found: the published SqueezeNet weights live in ../shared/data "
                f"(or $MEDJAX_DATA_DIR)/pretrained")
  return path


@pytest.fixture(scope="module")
def keras():
  pytest.importorskip("tensorflow")
  import keras
  return keras


def test_reads_published_squeezenet_layout(squeezenet_h5):
  weights = keras_h5.load_weights(squeezenet_h5)
  assert len(weights) == 2 * (1 + 8 * 3)
  assert weights["conv1/kernel"].shape == (3, 3, 3, 64)
  assert weights["fire2/squeeze1x1/kernel"].shape == (1, 1, 64, 16)
  assert weights["fire9/expand3x3/bias"].shape == (256,)


def _keras_squeezenet(keras, h5_path):
  """rcmalli's SqueezeNet v1.1 (keras-squeezenet) in the keras 3 functional API, weights set
  from the file with h5py. Keras 3 forbids '/' in layer names, so ``fire2/squeeze1x1``
  becomes ``fire2_squeeze1x1`` and the file is read by its own layer_names/weight_names."""
  from keras import layers

  def fire(x, i, squeeze, expand):
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"fire{i}_squeeze1x1")(x)
    left = layers.Conv2D(expand, 1, activation="relu", name=f"fire{i}_expand1x1")(x)
    right = layers.Conv2D(expand, 3, padding="same", activation="relu",
                          name=f"fire{i}_expand3x3")(x)
    return layers.Concatenate(axis=-1, name=f"fire{i}_concat")([left, right])

  inputs = keras.Input((227, 227, 3))
  x = layers.Conv2D(64, 3, strides=2, padding="valid", activation="relu", name="conv1")(inputs)
  x = layers.MaxPooling2D(3, 2, name="pool1")(x)
  x = fire(fire(x, 2, 16, 64), 3, 16, 64)
  x = layers.MaxPooling2D(3, 2, name="pool3")(x)
  x = fire(fire(x, 4, 32, 128), 5, 32, 128)
  x = layers.MaxPooling2D(3, 2, name="pool5")(x)
  x = fire(fire(fire(fire(x, 6, 48, 192), 7, 48, 192), 8, 64, 256), 9, 64, 256)
  model = keras.Model(inputs, x)
  with h5py.File(h5_path, "r") as f:
    for layer in model.layers:
      if layer.weights:
        group = f[layer.name.replace("_", "/", 1) if layer.name.startswith("fire") else layer.name]
        layer.set_weights([group[n.decode()][()] for n in group.attrs["weight_names"]])
  return model


@pytest.mark.slow
def test_squeezenet_fire9_matches_tf_keras(squeezenet_h5, keras):
  """Same file, same fire9. Caffe-scale input drives fire9 to ~360, where float32 alone
  (either framework vs a float64 evaluation) is ~3e-4 off, so the 1e-4 absolute bound is
  checked in float64 in both frameworks, and float32 relative to the activation scale."""
  from PIL import Image
  module, variables, spec = load.load_backbone("squeezenet1_1", squeezenet_h5)
  cat = _shared_data() / "imagenet_samples" / "cat.bmp"
  noise = np.random.default_rng(0).uniform(0, 1, (227, 227, 3)).astype(np.float32)
  images = [ops.NORMALISATIONS[spec.normalisation](noise).astype(np.float32)]
  if cat.is_file():
    images.append(classify.prepare(spec, Image.open(cat)))
  x = np.stack(images)
  keras32 = _keras_squeezenet(keras, squeezenet_h5).predict(x, verbose=0)
  ours32 = np.asarray(jax.jit(module.apply)(variables, x)[1]["fire9"])
  assert ours32.shape == (len(images), 13, 13, 512)
  assert np.abs(ours32 - keras32).max() < 1e-5 * np.abs(keras32).max()

  policy = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float64")
  try:
    keras64 = _keras_squeezenet(keras, squeezenet_h5).predict(x.astype(np.float64), verbose=0)
  finally:
    keras.config.set_dtype_policy(policy)
  with jax.enable_x64(True):
    variables64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    ours64 = np.asarray(module.apply(variables64, x.astype(np.float64))[1]["fire9"])
  assert ours64.dtype == np.float64 and keras64.dtype == np.float64
  assert np.abs(ours64 - keras64).max() < 1e-4


def test_wrong_file_lists_missing_and_unexpected_layers(squeezenet_h5):
  with pytest.raises(maps.WeightImportError) as e:
    load.load_backbone("vgg19", squeezenet_h5)
  message = str(e.value)
  assert str(squeezenet_h5) in message
  assert "missing: block1_conv1/kernel" in message
  assert "unexpected: fire2/squeeze1x1/kernel (1, 1, 64, 16)" in message


@pytest.fixture(scope="module")
def keras_vgg19(keras):
  keras.utils.set_random_seed(0)
  model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if layer.weights:  # Keras initialises biases to zero; make them count.
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape).astype(np.float32)])
  return model


@pytest.mark.parametrize("layout", ["weights_only",
                                    pytest.param("whole_model", marks=pytest.mark.slow)])
def test_vgg19_round_trip_through_keras_files(tmp_path, keras, keras_vgg19, layout):
  path = tmp_path / "vgg19.h5"
  if layout == "weights_only":  # the keras.applications *_notop.h5 layout.
    from keras.src.legacy.saving import legacy_h5_format
    with h5py.File(path, "w") as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, keras_vgg19)
  else:
    keras_vgg19.save(path)
    with h5py.File(path, "r") as f:
      assert "model_weights" in f
  names = [f"block{b}_pool" for b in range(1, 6)] + ["block1_conv1", "block5_conv4"]
  probe = keras.Model(keras_vgg19.input, [keras_vgg19.get_layer(n).output for n in names])
  x = np.random.default_rng(1).uniform(-120, 150, (2, 32, 32, 3)).astype(np.float32)
  want = probe.predict(x, verbose=0)
  module, variables, spec = load.load_backbone("vgg19", path)
  assert spec.weights_format == "keras" and spec.normalisation == "caffe"
  _, features = jax.jit(module.apply)(variables, x)
  for name, ref in zip(names, want):
    got = np.asarray(features[name])
    assert got.shape == ref.shape, name
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max(), name


def test_keras3_native_weights_file_is_refused_clearly(tmp_path, keras_vgg19):
  path = tmp_path / "vgg19.weights.h5"
  keras_vgg19.save_weights(path)
  with pytest.raises(ValueError, match="Keras 3"):
    keras_h5.load_weights(path)
