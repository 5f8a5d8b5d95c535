"""System 2: the modified AlexNet of Madamombe for anatomy classification.

Paper Table I: conv1 96@11x11 stride 4 + LRN, max-pool 3 stride 2, conv2 256@5x5 stride 2,
conv3 384@3x3 stride 2, conv4 256@3x3 stride 2, fc5 4096 with ReLU and no dropout, fc6
4096. Interpretations (the paper gives no input size, padding or classifier):
- input 227x227 as AlexNet; conv1 'valid' (227 -> 55), pool 55 -> 27;
- conv2-4 padded as their AlexNet counterparts (2, 1, 1): 27 -> 14 -> 7 -> 4, so fc5
  sees 4*4*256 = 4096 inputs; every conv is followed by ReLU (paper eq. 2);
- fc6 is the 4096-d image descriptor (``pre_logits``); a linear classifier to
  ``num_classes`` follows it, trained with softmax cross-entropy.
LRN uses Caffe's AlexNet constants (size 5, alpha 1e-4, beta 0.75, k 1).

The text's "the pooled feature maps are again convolved in layer conv3" can be read as a
second max-pool (3, stride 2, as after conv1) between conv2 and conv3, which Table I does
not list; ``pool_after_conv2=True`` builds that reading: 27 -> 14 -> pool 6 -> 3 -> 2, so
fc5 sees 2*2*256 = 1024 inputs. The default follows Table I (no such pool).
"""
import flax.linen as nn

from medjax.kernels import XLA_CPU, Conv, Dense, max_pool
from medjax.models import layers


class ModifiedAlexNet(nn.Module):
  num_classes: int
  fc_units: int = 4096
  pool_after_conv2: bool = False
  kernels: str = XLA_CPU  # medjax.kernels: "xla_cpu" or "reference" ops.

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train  # The paper removes dropout; no other train-time behaviour.
    features = {}
    x = Conv(96, (11, 11), strides=(4, 4), padding="VALID", kernels=self.kernels,
             name="conv1", activation=nn.relu)(x)
    x = layers.local_response_norm(x)
    x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
    features["pool1"] = x
    for name, filters, kernel, pad in (("conv2", 256, 5, 2), ("conv3", 384, 3, 1),
                                       ("conv4", 256, 3, 1)):
      x = Conv(filters, (kernel, kernel), strides=(2, 2), padding=((pad, pad), (pad, pad)),
               kernels=self.kernels, name=name, activation=nn.relu)(x)
      features[name] = x
      if name == "conv2" and self.pool_after_conv2:
        x = max_pool(x, (3, 3), (2, 2), kernels=self.kernels)
        features["pool2"] = x
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(Dense(self.fc_units, kernels=self.kernels, name="fc5")(x))
    features["fc5"] = x
    x = Dense(self.fc_units, kernels=self.kernels, name="fc6")(x)
    features["pre_logits"] = x
    logits = Dense(self.num_classes, kernels=self.kernels, name="classifier")(x)
    return logits, features
