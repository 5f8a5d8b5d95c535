"""VGG19 (Simonyan & Zisserman 2014, configuration E), layer names as in Keras.

Retrieval and VLAD pipelines pool *intermediate* VGG maps at large input sizes (224,
544, 864, ...), so every convolution (``"block1_conv1"``..``"block5_conv4"``, after ReLU)
and every pooling output (``"block1_pool"``..``"block5_pool"``) is returned, and the
convolutional part takes any input size. Keras and torchvision share the architecture
(3x3 convs with padding 1, 2x2 max pools, fc 4096-4096-classes) and differ only in how
they store weights, which :mod:`medjax.weights.maps` handles.

The classifier follows torchvision: an adaptive 7x7 average pool (the identity at 224,
where Keras has none) lets it run at other sizes too. ``"pre_logits"`` is fc2 (after
ReLU); with ``include_top=False`` it is block5_pool averaged over space (Keras
``pooling="avg"``) and ``logits`` is ``None``.
"""
import flax.linen as nn
import jax.numpy as jnp

from medjax.kernels import XLA_CPU, Conv, Dense, adaptive_avg_pool, max_pool

# Convolutions per block and their filters, VGG19.
_BLOCKS = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))


class VGG19(nn.Module):
  """VGG19 on NHWC input (Caffe BGR-mean preprocessing for Keras weights, ImageNet
  mean/std RGB for torchvision weights; see :mod:`medjax.models.backbones`)."""
  num_classes: int = 1000
  include_top: bool = True
  dropout_rate: float = 0.5
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    features = {}
    for b, (convs, filters) in enumerate(_BLOCKS, start=1):
      for c in range(1, convs + 1):
        name = f"block{b}_conv{c}"
        x = Conv(filters, (3, 3), padding=1, kernels=self.kernels, name=name, activation=nn.relu)(x)
        features[name] = x
      x = max_pool(x, (2, 2), (2, 2), kernels=self.kernels)
      features[f"block{b}_pool"] = x
    if not self.include_top:
      features["pre_logits"] = jnp.mean(x, axis=(1, 2))
      return None, features
    x = adaptive_avg_pool(x, (7, 7), kernels=self.kernels)
    x = x.reshape(x.shape[0], -1)
    for name in ("fc1", "fc2"):
      x = nn.relu(Dense(4096, kernels=self.kernels, name=name)(x))
      features[name] = x
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    features["pre_logits"] = features["fc2"]
    return Dense(self.num_classes, kernels=self.kernels, name="predictions")(x), features
