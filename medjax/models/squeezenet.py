"""SqueezeNet v1.1 (Iandola et al. 2016) in the layout of rcmalli's Keras port.

The ImageNet weights users have for it (``squeezenet_weights_tf_dim_ordering_tf_kernels
_notop.h5``) come from rcmalli/keras-squeezenet, itself converted from the Caffe model, so
this follows that port rather than the Caffe prototxt where they differ: max pools floor
their output size (Keras ``"valid"``; Caffe rounds up), and input is Caffe-preprocessed
(BGR, ImageNet channel means subtracted, 0..255) at 227x227.

Layers: ``conv1`` (3x3/2, 64), then fire modules ``fire2``..``fire9`` -- ``squeeze1x1``
followed by ``expand1x1`` and ``expand3x3`` whose ReLU outputs are concatenated -- with
3x3/2 max pools after conv1, fire3 and fire5. The classifier (dropout 0.5, 1x1 ``conv10``
to classes, ReLU, global average) is a convolution, so ``"pre_logits"`` is fire9 averaged
over space. Features: ``"conv1"``, ``"pool1"``, ``"fire2"``..``"fire9"``, ``"pool3"``,
``"pool5"`` and ``"pre_logits"``; fire9 is 13x13x512 at 227.
"""
import flax.linen as nn
import jax.numpy as jnp

from medjax.kernels import XLA_CPU, Conv, max_pool

# fire id -> (squeeze, expand) filters; a max pool precedes fire4 and fire6.
_FIRES = {2: (16, 64), 3: (16, 64), 4: (32, 128), 5: (32, 128),
          6: (48, 192), 7: (48, 192), 8: (64, 256), 9: (64, 256)}


class Fire(nn.Module):
  squeeze: int
  expand: int
  kernels: str = XLA_CPU

  @nn.compact
  def __call__(self, x):
    x = Conv(self.squeeze, (1, 1), kernels=self.kernels, name="squeeze1x1", activation=nn.relu)(x)
    left = Conv(self.expand, (1, 1), kernels=self.kernels, name="expand1x1", activation=nn.relu)(x)
    right = Conv(self.expand, (3, 3), padding="SAME", kernels=self.kernels,
                 name="expand3x3", activation=nn.relu)(x)
    return jnp.concatenate([left, right], axis=-1)


class SqueezeNet11(nn.Module):
  """SqueezeNet v1.1 on NHWC Caffe-preprocessed input. ``include_top=False`` (the
  published Keras weights have no classifier) returns ``logits=None``."""
  num_classes: int = 1000
  include_top: bool = True
  dropout_rate: float = 0.5
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    features = {}
    x = Conv(64, (3, 3), strides=2, padding="VALID", kernels=self.kernels,
             name="conv1", activation=nn.relu)(x)
    features["conv1"] = x
    x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
    features["pool1"] = x
    for fire_id, (squeeze, expand) in _FIRES.items():
      if fire_id in (4, 6):
        x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
        features[f"pool{fire_id - 1}"] = x
      x = Fire(squeeze, expand, self.kernels, name=f"fire{fire_id}")(x)
      features[f"fire{fire_id}"] = x
    features["pre_logits"] = jnp.mean(x, axis=(1, 2))
    if not self.include_top:
      return None, features
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = Conv(self.num_classes, (1, 1), kernels=self.kernels, name="conv10", activation=nn.relu)(x)
    return jnp.mean(x, axis=(1, 2)), features
