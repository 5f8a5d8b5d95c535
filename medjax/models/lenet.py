"""System 1: the LeNet of the deeplearning.net tutorial as adapted by Lyndon et al. (2015).

Paper (ImageCLEF 2015 medical clustering, Table 1/2): two conv-pool layers, 20 and 50
filters of 15x15, stride 1, 2x2 max pooling, a 500-unit fully connected tanh layer and a
logistic-regression output. As in the tutorial's ``LeNetConvPoolLayer`` the convolution
is 'valid', pooling comes before the non-linearity, and the non-linearity is tanh:
``tanh(maxpool(conv(x)) + b)``. At 256x256 input: 256 -> 242 -> 121 -> 107 -> 53, so the
hidden layer sees 53*53*50 = 140,450 inputs.

"4x1 vs. All": four independent binary networks (Body, Head-Neck, Upper-Limb,
Lower-Limb). :class:`LeNetOneVsAll` stacks them with ``nn.vmap`` so that all four are
trained in one jitted step while keeping fully separate parameters; each head outputs one
logit (the tutorial's two-way softmax logistic layer is equivalent to one sigmoid logit).
"""
import flax.linen as nn
import jax.numpy as jnp

from medjax.models import layers
from medjax.models.pooling import max_pool

# The tutorial initialises tanh layers uniformly in +-sqrt(6 / (fan_in + fan_out)),
# i.e. Glorot-uniform, and the logistic layer at zero.
_glorot = nn.initializers.glorot_uniform()


class LeNet(nn.Module):
  """One binary (or ``num_classes``-way) LeNet; ``__call__`` returns ``(logits, features)``.

  ``activation`` is the tutorial's ``tanh`` by default; ``relu`` gives Caffe's LeNet
  (conv 20@5 -> pool -> conv 50@5 -> pool -> FC 500 ReLU), the baseline of system 2.
  """
  num_classes: int = 1
  filters: tuple[int, ...] = (20, 50)
  kernel_size: int = 15
  hidden: int = 500
  activation: str = "tanh"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No dropout or batch statistics in the 2015 network.
    act = {"tanh": jnp.tanh, "relu": nn.relu}[self.activation]
    features = {}
    for i, f in enumerate(self.filters):
      # 15x15 kernels: the selector convolves them by FFT on CPU (see layers.conv).
      x = layers.Conv(f, (self.kernel_size, self.kernel_size), padding="VALID", use_bias=False,
                      kernel_init=_glorot, name=f"conv{i}")(x)
      x = max_pool(x, (2, 2), (2, 2))  # nn.max_pool's values and gradients, faster.
      bias = self.param(f"conv{i}_bias", nn.initializers.zeros, (f,))
      x = act(x + bias)
      features[f"conv{i}"] = x
    x = x.reshape((x.shape[0], -1))
    x = act(nn.Dense(self.hidden, kernel_init=_glorot, name="hidden")(x))
    features["pre_logits"] = x
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="logistic")(x)
    return logits, features


class LeNetOneVsAll(nn.Module):
  """``num_heads`` independent binary LeNets trained together; logits ``(batch, num_heads)``.

  ``num_classes`` is the number of one-vs-all heads (4 for ImageCLEF 2015). Features are
  stacked on a trailing head axis, e.g. ``pre_logits`` is ``(batch, 500, num_heads)``.
  """
  num_classes: int = 4
  filters: tuple[int, ...] = (20, 50)
  kernel_size: int = 15
  hidden: int = 500

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    heads = nn.vmap(
        LeNet, variable_axes={"params": 0}, split_rngs={"params": True},
        in_axes=None, out_axes=-1, axis_size=self.num_classes)(
            num_classes=1, filters=self.filters, kernel_size=self.kernel_size,
            hidden=self.hidden, name="heads")
    del train
    logits, features = heads(x)
    return logits[:, 0, :], features
