"""AlexNet, as published (Caffe) and as torchvision ships it.

The two differ enough that weights never transfer between them, and papers report
features of one or the other:

* :class:`AlexNet` -- Krizhevsky et al. 2012 in BVLC Caffe's ``bvlc_alexnet`` form:
  227x227 input, 96/256/384/384/256 filters, local response normalisation after the
  first two convolutions (before pooling), and conv2/conv4/conv5 split into two groups
  (Caffe ``group: 2``, the paper's two-GPU split). conv5 is 13x13x256, pool5 6x6x256.
  Caffe rounds pooled sizes up; at 227 that equals flooring, elsewhere it adds a row.
* :class:`AlexNetTorchvision` -- the "one weird trick" single-tower variant: 224x224,
  64/192/384/256/256 filters, no LRN, no groups, and an adaptive 6x6 average pool so the
  classifier accepts any input size.

Both return features ``"conv1"``..``"conv5"`` (after ReLU, as Caffe's in-place ReLU
leaves its blobs), ``"pool5"``, and with the classifier ``"fc6"``/``"fc7"`` (after ReLU)
with ``"pre_logits"`` = fc7. With ``include_top=False`` only the convolutional part is
built (any input size), ``logits`` is ``None`` and ``"pre_logits"`` is pool5 averaged
over space (Keras ``include_top=False, pooling="avg"``).
"""
import functools

import flax.linen as nn
import jax.numpy as jnp

from medjax.models.layers import local_response_norm
from medjax.kernels import XLA_CPU, Conv, Dense, adaptive_avg_pool, max_pool, max_pool_ceil


def _classifier(x, features, *, num_classes, dropout_rate, dropout_first, train, kernels):
  """fc6 -> fc7 -> fc8. Caffe drops out after each ReLU; torchvision before fc6 and fc7.

  Both flatten (C, H, W) maps; medjax flattens NHWC and the weight maps permute fc6.
  """
  x = x.reshape(x.shape[0], -1)
  for name in ("fc6", "fc7"):
    if dropout_first:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    x = nn.relu(Dense(4096, kernels=kernels, name=name)(x))
    features[name] = x
    if not dropout_first:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  features["pre_logits"] = features["fc7"]
  return Dense(num_classes, kernels=kernels, name="fc8")(x), features


class AlexNet(nn.Module):
  """Original AlexNet (Caffe ``bvlc_alexnet``) on NHWC input, 227x227 for the classifier.

  Expects Caffe preprocessing (BGR, ImageNet mean subtracted, 0..255 scale).
  """
  num_classes: int = 1000
  include_top: bool = True
  dropout_rate: float = 0.5
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    features = {}
    conv = functools.partial(Conv, kernels=self.kernels)
    x = conv(96, (11, 11), strides=4, padding="VALID", name="conv1", activation=nn.relu)(x)
    features["conv1"] = x
    x = max_pool_ceil(local_response_norm(x, 5, 1e-4, 0.75, 1.0), 3, 2, kernels=self.kernels)
    x = conv(256, (5, 5), padding=2, feature_group_count=2, name="conv2", activation=nn.relu)(x)
    features["conv2"] = x
    x = max_pool_ceil(local_response_norm(x, 5, 1e-4, 0.75, 1.0), 3, 2, kernels=self.kernels)
    x = conv(384, (3, 3), padding=1, name="conv3", activation=nn.relu)(x)
    features["conv3"] = x
    x = conv(384, (3, 3), padding=1, feature_group_count=2, name="conv4", activation=nn.relu)(x)
    features["conv4"] = x
    x = conv(256, (3, 3), padding=1, feature_group_count=2, name="conv5", activation=nn.relu)(x)
    features["conv5"] = x
    x = max_pool_ceil(x, 3, 2, kernels=self.kernels)
    features["pool5"] = x
    if not self.include_top:
      features["pre_logits"] = jnp.mean(x, axis=(1, 2))
      return None, features
    return _classifier(x, features, num_classes=self.num_classes,
                       dropout_rate=self.dropout_rate, dropout_first=False, train=train,
                       kernels=self.kernels)


class AlexNetTorchvision(nn.Module):
  """torchvision ``alexnet`` on NHWC input (224x224 nominal; any size >= 63 works).

  Expects torchvision preprocessing (RGB in 0..1, ImageNet mean/std).
  """
  num_classes: int = 1000
  include_top: bool = True
  dropout_rate: float = 0.5
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    features = {}
    conv = functools.partial(Conv, kernels=self.kernels)
    x = conv(64, (11, 11), strides=4, padding=2, name="conv1", activation=nn.relu)(x)
    features["conv1"] = x
    x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
    x = conv(192, (5, 5), padding=2, name="conv2", activation=nn.relu)(x)
    features["conv2"] = x
    x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
    x = conv(384, (3, 3), padding=1, name="conv3", activation=nn.relu)(x)
    features["conv3"] = x
    x = conv(256, (3, 3), padding=1, name="conv4", activation=nn.relu)(x)
    features["conv4"] = x
    x = conv(256, (3, 3), padding=1, name="conv5", activation=nn.relu)(x)
    features["conv5"] = x
    x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
    features["pool5"] = x
    if not self.include_top:
      features["pre_logits"] = jnp.mean(x, axis=(1, 2))
      return None, features
    x = adaptive_avg_pool(x, (6, 6), kernels=self.kernels)
    return _classifier(x, features, num_classes=self.num_classes,
                       dropout_rate=self.dropout_rate, dropout_first=True, train=train,
                       kernels=self.kernels)
