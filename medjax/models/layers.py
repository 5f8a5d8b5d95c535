"""Layers the papers use that Flax does not ship."""
import jax
import jax.numpy as jnp
import flax.linen as nn


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Cross-channel LRN exactly as Caffe's AlexNet (NHWC).

  ``y = x / (k + alpha / size * sum_{c' in window(c)} x_{c'}^2) ** beta``; Caffe's
  ``local_size``/``alpha``/``beta``/``k`` (torch's ``nn.LocalResponseNorm`` uses the same
  alpha/size convention). The window is centred and zero-padded at the channel ends.
  """
  sq = jnp.square(x)
  half = size // 2
  window_sum = jax.lax.reduce_window(
      sq, 0.0, jax.lax.add, window_dimensions=(1, 1, 1, size), window_strides=(1, 1, 1, 1),
      padding=((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
  return x / jnp.power(k + (alpha / size) * window_sum, beta)


class LocalResponseNorm(nn.Module):
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0

  @nn.compact
  def __call__(self, x):
    return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
