"""Systems 1 and 2: the deeplearning.net tutorial's LeNet (Lyndon et al. 2015) and Caffe's.

Paper 1 (ImageCLEF 2015 medical clustering, Table 1/2): two conv-pool layers, 20 and 50
filters of 15x15, stride 1, 2x2 max pooling, a 500-unit fully connected tanh layer and a
logistic-regression output. As in the tutorial's ``LeNetConvPoolLayer`` the convolution
is 'valid', pooling comes before the non-linearity, and the non-linearity is tanh:
``tanh(maxpool(conv(x)) + b)``. At 256x256 input: 256 -> 242 -> 121 -> 107 -> 53, so the
hidden layer sees 53*53*50 = 140,450 inputs. Initialisation is the tutorial's (see
:func:`tutorial_conv_init`): its conv fan-out is divided by the pool size, so the bounds
are not Glorot's.

"4x1 vs. All": four independent binary networks (Body, Head-Neck, Upper-Limb,
Lower-Limb). :class:`LeNetOneVsAll` stacks them with ``nn.vmap`` so that all four are
trained in one jitted step while keeping fully separate parameters. Each binary head is
the tutorial's ``LogisticRegression`` with two outputs (``head="two_way"``, the default),
zero-initialised: a two-way softmax is a sigmoid of ``z1 - z0``, but under plain SGD its
two weight vectors move apart twice as fast as one sigmoid weight vector would, so the
single logit (``head="one_logit"``) is not the tutorial's training at the same learning
rate. The two-way head returns ``z1 - z0`` as its logit, so the one-vs-all sigmoid loss
on it *is* the two-way softmax negative log-likelihood and the metrics threshold it at 0
(the two-way argmax).

Caffe's LeNet (``variant="caffe"``, system 2's LeNet arm; ``lenet_train_test.prototxt``):
conv1 20@5 -> max-pool 2 -> conv2 50@5 -> max-pool 2 -> ip1 500 -> ReLU -> ip2, with no
non-linearity after the conv-pools, Caffe's ``xavier`` filler (uniform +-sqrt(3/fan_in))
for the weights and zero biases.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.kernels import XLA_CPU, Conv, Dense, max_pool

POOL = (2, 2)


def tutorial_bound(fan_in: int, fan_out: int) -> float:
  """The tutorial's tanh-layer bound, sqrt(6 / (fan_in + fan_out))."""
  return math.sqrt(6.0 / (fan_in + fan_out))


def tutorial_conv_init(pool_size: int = POOL[0] * POOL[1]):
  """``LeNetConvPoolLayer``'s filters: fan_in = in*kh*kw, fan_out = out*kh*kw // pool size.

  Each output unit of a conv-pool layer sees one of ``pool_size`` conv outputs, hence the
  division; Glorot (flax's ``glorot_uniform``) would use out*kh*kw.
  """
  def init(key, shape, dtype=jnp.float32):
    kh, kw, cin, cout = shape
    bound = tutorial_bound(cin * kh * kw, cout * kh * kw // pool_size)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


# The tutorial's ``HiddenLayer`` with tanh: +-sqrt(6 / (n_in + n_out)), which is Glorot.
_tutorial_dense_init = nn.initializers.glorot_uniform()
# Caffe's ``xavier`` filler (variance_norm FAN_IN): uniform +-sqrt(3 / fan_in).
_caffe_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")

# variant -> (conv-pool activation, hidden activation, conv init, dense init)
_VARIANTS = {
    "tutorial": (jnp.tanh, jnp.tanh, tutorial_conv_init(), _tutorial_dense_init),
    "caffe": (None, nn.relu, _caffe_init, _caffe_init),
}
HEADS = ("two_way", "one_logit")


class LeNet(nn.Module):
  """One LeNet; ``__call__`` returns ``(logits, features)``.

  ``num_classes=1`` is a binary network whose ``head`` is ``"two_way"`` (the tutorial's
  two-output logistic layer; the logit returned is ``z1 - z0``) or ``"one_logit"``; other
  ``num_classes`` get a ``num_classes``-way output layer. ``variant`` is ``"tutorial"``
  (system 1) or ``"caffe"`` (system 2's LeNet arm).
  """
  num_classes: int = 1
  filters: tuple[int, ...] = (20, 50)
  kernel_size: int = 15
  hidden: int = 500
  variant: str = "tutorial"
  head: str = "two_way"
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No dropout or batch statistics in either network.
    if self.variant not in _VARIANTS or self.head not in HEADS:
      raise ValueError(f"LeNet variant={self.variant!r}, head={self.head!r}; expected one of "
                       f"{sorted(_VARIANTS)} and {HEADS}")
    conv_act, hidden_act, conv_init, dense_init = _VARIANTS[self.variant]
    features = {}
    for i, f in enumerate(self.filters):
      # With the XLA:CPU kernels the 15x15 kernels go by FFT (medjax.kernels.conv_algorithm).
      x = Conv(f, (self.kernel_size, self.kernel_size), padding="VALID", use_bias=False,
               kernel_init=conv_init, kernels=self.kernels, name=f"conv{i}")(x)
      x = max_pool(x, POOL, POOL, kernels=self.kernels)
      # A per-channel bias commutes with max-pooling: Caffe's bias-before-pool is the same.
      x = x + self.param(f"conv{i}_bias", nn.initializers.zeros, (f,))
      x = conv_act(x) if conv_act is not None else x
      features[f"conv{i}"] = x
    x = x.reshape((x.shape[0], -1))
    x = hidden_act(Dense(self.hidden, kernel_init=dense_init, kernels=self.kernels,
                         name="hidden")(x))
    features["pre_logits"] = x
    two_way = self.num_classes == 1 and self.head == "two_way"
    # The tutorial's logistic layer starts at zero; Caffe's ip2 uses its xavier filler.
    out_init = nn.initializers.zeros if self.variant == "tutorial" else dense_init
    logits = Dense(2 if two_way else self.num_classes, kernel_init=out_init,
                   kernels=self.kernels, name="logistic")(x)
    if two_way:
      features["two_way_logits"] = logits
      logits = logits[:, 1:] - logits[:, :1]  # log p(positive) - log p(negative)
    return logits, features


class LeNetOneVsAll(nn.Module):
  """``num_classes`` independent binary LeNets trained together; logits ``(batch, heads)``.

  ``num_classes`` is the number of one-vs-all heads (4 for ImageCLEF 2015). Features are
  stacked on a trailing head axis, e.g. ``pre_logits`` is ``(batch, 500, num_heads)``.
  """
  num_classes: int = 4
  filters: tuple[int, ...] = (20, 50)
  kernel_size: int = 15
  hidden: int = 500
  head: str = "two_way"
  kernels: str = XLA_CPU

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    heads = nn.vmap(
        LeNet, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=None, out_axes=-1, axis_size=self.num_classes)(
            num_classes=1, filters=self.filters, kernel_size=self.kernel_size,
            hidden=self.hidden, head=self.head, kernels=self.kernels, name="heads")
    logits, features = heads(x)
    return logits[:, 0, :], features
