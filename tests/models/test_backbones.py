"""Backbone definitions: shapes and named features, specs, default-weight loading, pooling
rules. Weight-import faithfulness is tested in tests/weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.data import ops
from medjax.kernels import adaptive_avg_pool, max_pool_ceil
from medjax.models import backbones, registry
from medjax.models.alexnet import AlexNet, AlexNetTorchvision
from medjax.models.googlenet import GoogLeNet
from medjax.models.squeezenet import SqueezeNet11
from medjax.models.vgg import VGG19
from medjax.weights import load


def _shapes(module, size, **kwargs):
  """Output shapes without computing anything (jax.eval_shape)."""
  def run():
    x = jnp.zeros((1, size, size, 3))
    variables = module.init(jax.random.PRNGKey(0), x)
    return module.apply(variables, x, **kwargs)
  logits, features = jax.eval_shape(run)
  return (None if logits is None else logits.shape), {k: v.shape for k, v in features.items()}


def test_every_backbone_is_registered_and_has_a_spec():
  for name in backbones.SPECS:
    assert registry.get_model_class(name) is not None
  assert backbones.get_spec("efficientnet_lite0").normalisation == "efficientnet_lite"


def test_efficientnet_lite0_loads_offline_with_named_features():
  module, variables, spec = load.load_backbone("efficientnet_lite0")
  assert spec.input_size == (224, 224) and spec.weights_format == "torch"
  x = ops.NORMALISATIONS[spec.normalisation](np.full((1, 224, 224, 3), 127.0 / 255.0))
  np.testing.assert_allclose(x, 0.0, atol=1e-6)
  logits, features = jax.jit(module.apply)(variables, x)
  assert logits.shape == (1, 1000)
  assert features["stem"].shape == (1, 112, 112, 32)
  assert features["stage7"].shape == (1, 7, 7, 320)
  assert features["head"].shape == (1, 7, 7, 1280)
  assert features["pre_logits"].shape == (1, 1280)
  assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.slow
def test_efficientnet_lite0_trains_with_dropout_and_batch_stats():
  # Starts from the pretrained variables: random init would compile for longer than the test.
  module, variables, _ = load.load_backbone("efficientnet_lite0")
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  train_step = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"],
                                                 rngs={"dropout": jax.random.PRNGKey(2)}))
  (logits, _), updates = train_step(variables, x)
  assert logits.shape == (2, 1000)
  assert not np.allclose(updates["batch_stats"]["stem_bn"]["mean"],
                         variables["batch_stats"]["stem_bn"]["mean"])


@pytest.mark.parametrize("size,pool5", [(224, 7), (544, 17), (864, 27)])
def test_vgg19_conv_features_at_any_size(size, pool5):
  logits, f = _shapes(VGG19(include_top=False), size)
  assert logits is None
  assert f["block5_pool"] == (1, pool5, pool5, 512)
  assert f["block5_conv4"] == (1, 2 * pool5, 2 * pool5, 512)
  assert f["block1_pool"] == (1, size // 2, size // 2, 64)
  assert {f"block{b}_pool" for b in range(1, 6)} <= set(f)
  assert f["pre_logits"] == (1, 512)


def test_vgg19_classifier_shapes():
  logits, f = _shapes(VGG19(num_classes=7), 224)
  assert logits == (1, 7) and f["fc2"] == (1, 4096) and f["pre_logits"] == (1, 4096)


def test_alexnet_original_geometry():
  logits, f = _shapes(AlexNet(), 227)
  assert f["conv1"] == (1, 55, 55, 96)
  assert f["conv5"] == (1, 13, 13, 256)
  assert f["pool5"] == (1, 6, 6, 256)
  assert f["pre_logits"] == (1, 4096) and logits == (1, 1000)
  params = jax.eval_shape(lambda: AlexNet().init(jax.random.PRNGKey(0),
                                                 jnp.zeros((1, 227, 227, 3))))["params"]
  assert params["conv2"]["kernel"].shape == (5, 5, 48, 256)  # Caffe group: 2
  assert params["conv4"]["kernel"].shape == (3, 3, 192, 384)
  assert params["fc6"]["kernel"].shape == (9216, 4096)


def test_alexnet_torchvision_geometry():
  logits, f = _shapes(AlexNetTorchvision(num_classes=10), 224)
  assert f["conv1"] == (1, 55, 55, 64) and f["pool5"] == (1, 6, 6, 256) and logits == (1, 10)
  logits, f = _shapes(AlexNetTorchvision(include_top=False), 320)
  assert logits is None and f["pre_logits"] == (1, 256)


def test_googlenet_and_squeezenet_geometry():
  logits, f = _shapes(GoogLeNet(), 224)
  assert f["inception3a"] == (1, 28, 28, 256)
  assert f["inception4e"] == (1, 14, 14, 832)
  assert f["inception5b"] == (1, 7, 7, 1024)
  assert f["pre_logits"] == (1, 1024) and logits == (1, 1000)
  logits, f = _shapes(SqueezeNet11(include_top=False), 227)
  assert logits is None and f["fire9"] == (1, 13, 13, 512) and f["pre_logits"] == (1, 512)
  logits, f = _shapes(SqueezeNet11(num_classes=5), 227)
  assert logits == (1, 5)


@pytest.mark.slow
def test_pooling_matches_torch_rounding():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for size in (7, 8, 13, 14, 55):
    x = rng.standard_normal((1, size, size + 1, 3)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
    for window, stride, pad in ((3, 2, 0), (2, 2, 0), (3, 1, 1)):
      ref = torch.nn.functional.max_pool2d(xt, window, stride, pad, ceil_mode=True)
      np.testing.assert_array_equal(np.asarray(max_pool_ceil(jnp.asarray(x), window, stride, pad)),
                                    ref.numpy().transpose(0, 2, 3, 1))
    for out in ((6, 6), (7, 7), (1, 1)):
      ref = torch.nn.functional.adaptive_avg_pool2d(xt, out).numpy().transpose(0, 2, 3, 1)
      np.testing.assert_allclose(np.asarray(adaptive_avg_pool(jnp.asarray(x), out)), ref,
                                 rtol=1e-6, atol=1e-6)


def test_missing_default_weights_name_the_file(tmp_path, monkeypatch):
  monkeypatch.setattr(load, "repo_data_dirs", lambda: [tmp_path])
  with pytest.raises(FileNotFoundError) as e:
    load.load_backbone("squeezenet1_1")
  assert "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(e.value)
  assert str(tmp_path) in str(e.value)
  with pytest.raises(FileNotFoundError, match="no default weights"):
    load.load_backbone("alexnet")


def test_specs_name_normalisations_of_the_shared_table():
  """Specs name their input normalisation; ``medjax.data.ops`` holds the one implementation."""
  def normalise(name, pixel):
    return ops.NORMALISATIONS[backbones.get_spec(name).normalisation](pixel / 255.0)
  pixel = np.array([[[255.0, 0.0, 127.0]]])
  np.testing.assert_allclose(normalise("vgg19", pixel),
                             [[[127.0 - 103.939, -116.779, 255.0 - 123.68]]], rtol=1e-6)
  np.testing.assert_allclose(normalise("efficientnet_lite0", pixel),
                             [[[1.0, -127.0 / 128, 0.0]]], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(normalise("googlenet", pixel),
                             [[[(1 - 0.485) / 0.229, -0.456 / 0.224, (127 / 255 - 0.406) / 0.225]]],
                             rtol=1e-5)
  assert {spec.normalisation for spec in backbones.SPECS.values()} <= set(ops.NORMALISATIONS)


def test_googlenet_2014_geometry_matches_torchvisions():
  logits, f = _shapes(GoogLeNet(num_classes=3, variant="2014"), 224)
  assert f["inception3a"] == (1, 28, 28, 256) and f["inception4e"] == (1, 14, 14, 832)
  assert f["inception5a"] == (1, 7, 7, 832) and f["pre_logits"] == (1, 1024) and logits == (1, 3)


def test_one_resize_rule_for_extraction_and_the_classifier():
  """``resize_steps`` is the one reading of a spec's resize rule: the extraction pp string
  and the host-side classifier both follow it (a centre crop is not squashed)."""
  from PIL import Image

  from medjax.features import extract
  from medjax import classify
  crop = backbones.get_spec("googlenet")
  assert backbones.resize_steps(crop) == (("resize_short", 256), ("central_crop", 224))
  assert backbones.resize_steps(crop, 448) == (("resize_short", 512), ("central_crop", 448))
  assert extract.input_pp(crop, 224) == ("decode(3)|resize_short(256)|central_crop(224)|"
                                         "normalize('torchvision')")
  squash = backbones.get_spec("vgg19")
  assert backbones.resize_steps(squash, 544) == (("resize", 544),)
  assert extract.input_pp(squash, 544) == "decode(3)|resize(544)|normalize('caffe')"
  # Shorter side already 256: the classifier's input is the central 224 x 224, unresized.
  pixels = np.random.default_rng(0).integers(0, 256, (256, 300, 3), dtype=np.uint8)
  expected = ops.NORMALISATIONS["torchvision"](pixels[16:240, 38:262] / np.float32(255.0))
  np.testing.assert_allclose(classify.prepare(crop, Image.fromarray(pixels)), expected,
                             rtol=1e-6)
