"""Frozen-backbone feature extraction (systems 3 and 5): images/s at 224x224.

medjax runs ``medjax.features.extract.make_feature_fn``, the jitted forward pass the
feature pipeline streams batches through (on CPU it splits each batch into cache-sized
chunks), on the registry's EfficientNet-Lite0 and VGG19. The peer is the same
architecture written in PyTorch below, in eval mode under ``torch.inference_mode()``, fed
the whole batch as a user's loop would (PyTorch too runs faster in small batches:
docs/performance.md compares against its best batch size). Weights are random (the same
arithmetic as the pretrained ones); the torch EfficientNet pads symmetrically where TF's
"SAME" pads one more pixel bottom-right at stride 2, which changes no operation count.
"""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from benchmarks import timing
from medjax.features.extract import make_feature_fn
from medjax.models import registry
from medjax.models.efficientnet_lite import _STAGES as LITE0_STAGES
from medjax.models.vgg import _BLOCKS as VGG19_BLOCKS


def torch_vgg19() -> nn.Module:
  """VGG19's convolutional part, then the spatial mean of block5_pool (medjax's pre_logits)."""
  layers, channels = [], 3
  for convs, filters in VGG19_BLOCKS:
    for _ in range(convs):
      layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
      channels = filters
    layers.append(nn.MaxPool2d(2))
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
  layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3)]
  return layers + [nn.ReLU6(inplace=True)] if act else layers


class TorchMBConv(nn.Module):
  def __init__(self, cin: int, kernel: int, stride: int, expand: int, cout: int):
    super().__init__()
    mid = cin * expand
    layers = _conv_bn(cin, mid) if expand != 1 else []
    layers += _conv_bn(mid, mid, kernel, stride, groups=mid)
    layers += _conv_bn(mid, cout, act=False)
    self.body = nn.Sequential(*layers)
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    return x + self.body(x) if self.residual else self.body(x)


def torch_efficientnet_lite0() -> nn.Module:
  """EfficientNet-Lite0 up to the pooled 1280-d head (medjax's pre_logits)."""
  layers, channels = _conv_bn(3, 32, 3, 2), 32
  for kernel, stride, expand, filters, repeats in LITE0_STAGES:
    for r in range(repeats):
      layers.append(TorchMBConv(channels, kernel, stride if r == 0 else 1, expand, filters))
      channels = filters
  layers += _conv_bn(channels, 1280) + [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  return nn.Sequential(*layers)


PEERS = {"efficientnet_lite0": torch_efficientnet_lite0, "vgg19": torch_vgg19}


def extraction_case(name: str, batch: int, repeats: int, size: int = 224,
                    compute_dtype: str = "float32") -> dict:
  module = registry.get_model(name, include_top=False)
  images = np.random.default_rng(0).standard_normal((batch, size, size, 3), np.float32)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  feature_fn = make_feature_fn(module, "pre_logits", pool=False, l2=False,
                               compute_dtype=compute_dtype)
  x = jax.device_put(images)
  flops = timing.accelerator_flops(feature_fn, variables, x)
  peer = PEERS[name]().eval().to(timing.peer_device())
  torch_x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
      timing.peer_device())

  def peer_fn():
    with torch.inference_mode(), timing.autocast(compute_dtype):
      return peer(torch_x)

  return timing.compare(f"extraction/{name}_{size}_b{batch}{timing.suffix(compute_dtype)}",
                        lambda: feature_fn(variables, x),
                        timing.peer_name(), peer_fn, repeats=repeats, items=batch,
                        flops=flops)


def cases(quick: bool) -> list[timing.Case]:
  repeats = 2 if quick else 7
  return [timing.Case(f"extraction/{name}", lambda name=name: extraction_case(name, 64, repeats))
          for name in PEERS] + [
      timing.Case("extraction/efficientnet_lite0_bf16",
                  timing.needs_bf16_units(lambda: extraction_case("efficientnet_lite0", 64, repeats,
                                          compute_dtype="bfloat16")))]
