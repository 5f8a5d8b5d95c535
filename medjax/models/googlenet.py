"""GoogLeNet / Inception v1 (Szegedy et al. 2014): the paper's form and torchvision's.

``variant="2014"`` is the network of the paper (Table 1, Caffe's ``bvlc_googlenet``), for
training from scratch (system 2's GoogLeNet arm): convolutions with biases and ReLU, no
batch norm, LRN (size 5, alpha 1e-4, beta 0.75) after pool1 and after conv2/3x3, true
5x5 convolutions in the 5x5 branch, a 3x3 stride-2 pool before inception5a, dropout 0.4
before the classifier, and Caffe's initialisation (xavier filler, conv biases 0.2). The
two auxiliary classifiers are not built: they would need a weighted extra loss in the
trainer, and the paper gives them only as a training aid.

``variant="torchvision"`` (the default) is torchvision's ``googlenet``, the one whose
ImageNet weights users have in PyTorch files, so it is reproduced exactly, including
where it departs from the paper:

* every convolution is followed by batch norm (eps 1e-3; the paper predates BN) --
  torchvision's weights were trained so, and without BN they would not fit;
* the "5x5" branch uses a 3x3 convolution (a bug torchvision kept for its weights);
* pools round up (``ceil_mode=True``, as the Caffe original);
* ``transform_input=True`` re-maps ImageNet-mean/std input to the (x - 0.5) / 0.5
  normalisation the weights were trained on, as torchvision does for pretrained weights;
* the two auxiliary classifiers exist only to help training from scratch; they are not
  built, and their tensors in a checkpoint (``aux1.*``, ``aux2.*``) are ignored on import.

ImageNet weights (``medjax.weights``) exist for the torchvision variant only.
Features: ``"conv1"``, ``"conv2"``, ``"conv3"``, each ``"inception3a"``..``"inception5b"``
output and ``"pre_logits"`` (the global average of inception5b, 1024). With
``include_top=False`` there is no classifier and ``logits`` is ``None``.
"""
import flax.linen as nn
import jax.numpy as jnp

from medjax.kernels import XLA_CPU, Conv, Dense, max_pool_ceil
from medjax.models import layers

VARIANTS = ("torchvision", "2014")
# Caffe's xavier filler (uniform +-sqrt(3 / fan_in)), as in bvlc_googlenet.
_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

# name -> (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection)
_INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class BasicConv(nn.Module):
  """Conv (no bias) -> BN (eps 1e-3) -> ReLU, torchvision's ``BasicConv2d``; with
  ``batch_norm=False``, the 2014 paper's conv (bias 0.2, xavier) -> ReLU."""
  filters: int
  kernel: int
  stride: int = 1
  padding: int = 0
  batch_norm: bool = True
  kernels: str = XLA_CPU

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if not self.batch_norm:
      return Conv(self.filters, (self.kernel, self.kernel), strides=self.stride,
                  padding=self.padding, kernel_init=_xavier, kernels=self.kernels,
                  bias_init=nn.initializers.constant(0.2), name="conv", activation=nn.relu)(x)
    x = Conv(self.filters, (self.kernel, self.kernel), strides=self.stride,
             padding=self.padding, use_bias=False, kernels=self.kernels, name="conv")(x)
    x = layers.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """Four parallel branches concatenated on channels (1x1 | 1x1-3x3 | 1x1-3x3 | pool-1x1)."""
  ch1x1: int
  ch3x3red: int
  ch3x3: int
  ch5x5red: int
  ch5x5: int
  pool_proj: int
  paper: bool = False  # True: the 2014 form (no BN, a true 5x5 in the "5x5" branch).
  kernels: str = XLA_CPU

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    conv = lambda *args, **kwargs: BasicConv(*args, batch_norm=not self.paper,
                                             kernels=self.kernels, **kwargs)
    b1 = conv(self.ch1x1, 1, name="branch1")(x, train=train)
    b2 = conv(self.ch3x3red, 1, name="branch2_0")(x, train=train)
    b2 = conv(self.ch3x3, 3, padding=1, name="branch2_1")(b2, train=train)
    b3 = conv(self.ch5x5red, 1, name="branch3_0")(x, train=train)
    k5 = 5 if self.paper else 3
    b3 = conv(self.ch5x5, k5, padding=k5 // 2, name="branch3_1")(b3, train=train)
    b4 = max_pool_ceil(x, 3, 1, 1, kernels=self.kernels)
    b4 = conv(self.pool_proj, 1, name="branch4_1")(b4, train=train)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
  """GoogLeNet on NHWC input, 224x224 nominal; ``variant`` "torchvision" or "2014".

  ``dropout_rate=None`` takes the variant's own (torchvision 0.2, the paper 0.4).
  """
  num_classes: int = 1000
  include_top: bool = True
  transform_input: bool = False
  dropout_rate: float | None = None
  variant: str = "torchvision"
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f"GoogLeNet variant={self.variant!r}; expected one of {VARIANTS}")
    paper = self.variant == "2014"
    conv = lambda *args, **kwargs: BasicConv(*args, batch_norm=not paper, kernels=self.kernels,
                                             **kwargs)
    pool = lambda x, window, stride: max_pool_ceil(x, window, stride, kernels=self.kernels)
    lrn = layers.local_response_norm if paper else (lambda x: x)
    if self.transform_input:
      mean = jnp.array([0.485, 0.456, 0.406], x.dtype)
      std = jnp.array([0.229, 0.224, 0.225], x.dtype)
      x = x * (std / 0.5) + (mean - 0.5) / 0.5
    features = {}
    x = conv(64, 7, stride=2, padding=3, name="conv1")(x, train=train)
    features["conv1"] = x
    x = lrn(pool(x, 3, 2))
    x = conv(64, 1, name="conv2")(x, train=train)
    features["conv2"] = x
    x = conv(192, 3, padding=1, name="conv3")(x, train=train)
    features["conv3"] = x
    x = pool(lrn(x), 3, 2)
    for name, channels in _INCEPTIONS.items():
      if name == "inception4a":
        x = pool(x, 3, 2)
      elif name == "inception5a":  # 14 -> 7 either way; Caffe pools 3x3, torchvision 2x2.
        x = pool(x, 3, 2) if paper else pool(x, 2, 2)
      x = Inception(*channels, paper=paper, kernels=self.kernels, name=name)(x, train=train)
      features[name] = x
    x = jnp.mean(x, axis=(1, 2))
    features["pre_logits"] = x
    if not self.include_top:
      return None, features
    rate = self.dropout_rate if self.dropout_rate is not None else (0.4 if paper else 0.2)
    x = nn.Dropout(rate, deterministic=not train)(x)
    dense_init = _xavier if paper else nn.linear.default_kernel_init
    return Dense(self.num_classes, kernel_init=dense_init, kernels=self.kernels, name="fc")(x), features
