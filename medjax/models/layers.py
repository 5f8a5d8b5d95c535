"""Layers the papers use that Flax does not ship (convolutions and pools: medjax.kernels)."""
import functools

import jax
import jax.numpy as jnp
import flax.linen as nn


def _channel_window_sum(a: jax.Array, low: int, high: int) -> jax.Array:
  """``out[..., c] = sum(a[..., c - low : c + high + 1])``, zero beyond the channel ends."""
  return jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, 1, 1, low + high + 1), (1, 1, 1, 1),
                               ((0, 0), (0, 0), (0, 0), (low, high)))


def _lrn_scale(x, size, alpha, k):
  return k + (alpha / size) * _channel_window_sum(jnp.square(x), size // 2, size - 1 - size // 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Cross-channel LRN exactly as Caffe's AlexNet (NHWC).

  ``y = x / (k + alpha / size * sum_{c' in window(c)} x_{c'}^2) ** beta``; Caffe's
  ``local_size``/``alpha``/``beta``/``k`` (torch's ``nn.LocalResponseNorm`` uses the same
  alpha/size convention). The window is centred and zero-padded at the channel ends.

  The gradient is written out (``dx = g d^-b - 2ab/n x S^T(g x d^-b / d)``, ``S`` the
  window sum) so that ``d^-b`` is computed once, in the forward pass, where autodiff of the
  power evaluates three powers per element.
  """
  return _lrn_fwd(x, size, alpha, beta, k)[0]


def _lrn_fwd(x, size, alpha, beta, k):
  scale = _lrn_scale(x, size, alpha, k)
  inv_pow = jnp.power(scale, -beta)
  return x * inv_pow, (x, scale, inv_pow)


def _lrn_bwd(size, alpha, beta, k, residuals, g):
  del k
  x, scale, inv_pow = residuals
  # S^T sums the mirrored window: the low and high reaches swap.
  back = _channel_window_sum(g * x * inv_pow / scale, size - 1 - size // 2, size // 2)
  return (g * inv_pow - (2 * alpha * beta / size) * x * back,)


local_response_norm.defvjp(_lrn_fwd, _lrn_bwd)


class LocalResponseNorm(nn.Module):
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0

  @nn.compact
  def __call__(self, x):
    return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
