"""Layers the papers use that Flax does not ship (convolutions and pools: medjax.kernels)."""
import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

from medjax.kernels.precision import accumulation_dtype


def _channel_window_sum(a: jax.Array, low: int, high: int) -> jax.Array:
  """``out[..., c] = sum(a[..., c - low : c + high + 1])``, zero beyond the channel ends."""
  return jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, 1, 1, low + high + 1), (1, 1, 1, 1),
                               ((0, 0), (0, 0), (0, 0), (low, high)))


def _lrn_scale(x, size, alpha, k):
  return k + (alpha / size) * _channel_window_sum(jnp.square(x), size // 2, size - 1 - size // 2)


def local_response_norm(x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> jax.Array:
  """Cross-channel LRN exactly as Caffe's AlexNet (NHWC).

  ``y = x / (k + alpha / size * sum_{c' in window(c)} x_{c'}^2) ** beta``; Caffe's
  ``local_size``/``alpha``/``beta``/``k`` (torch's ``nn.LocalResponseNorm`` uses the same
  alpha/size convention). The window is centred and zero-padded at the channel ends.

  The gradient is written out (``dx = g d^-b - 2ab/n x S^T(g x d^-b / d)``, ``S`` the
  window sum) so that ``d^-b`` is computed once, in the forward pass, where autodiff of the
  power evaluates three powers per element. A bfloat16 ``x`` is normalised in float32 (a
  bfloat16 window sum of squares loses digits, and XLA:CPU converts around each bfloat16
  op) and the result rounded once.
  """
  return _lrn(x.astype(accumulation_dtype(x.dtype)), size, alpha, beta, k).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, size, alpha, beta, k):
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


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


class LocalResponseNorm(nn.Module):
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0

  @nn.compact
  def __call__(self, x):
    return local_response_norm(x, self.size, self.alpha, self.beta, self.k)


@jax.custom_vjp
def normalize(x: jax.Array, mean: jax.Array, mul: jax.Array, bias: jax.Array) -> jax.Array:
  """``(x - mean) * mul + bias`` over the last axis, Flax's batch-norm arithmetic, whose
  backward pass keeps ``x`` rather than ``x - mean``: autodiff would write ``x - mean`` out
  as the residual of ``mul``'s gradient, one more pass over every normalised activation,
  while ``x`` (the convolution's output) exists anyway."""
  return (x - mean) * mul + bias


def _normalize_fwd(x, mean, mul, bias):
  return normalize(x, mean, mul, bias), (x, mean, mul)


def _normalize_bwd(residuals, g):
  # The barrier keeps XLA from merging this ``x - mean`` with the forward pass's into one
  # array written out for both, the residual this function exists to avoid.
  x, mean, mul = jax.lax.optimization_barrier(residuals)
  axes = tuple(range(g.ndim - 1))
  dbias = jnp.sum(g, axes)
  dmul = jnp.sum(g * (x - mean), axes)
  return (g * mul).astype(x.dtype), -dbias * mul, dmul, dbias


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """``nn.BatchNorm`` over the last axis (float32 statistics, ``E[x^2] - E[x]^2`` variance,
  running averages not updated while initialising): the same variables, values, output
  dtype and updates,
  normalising by :func:`normalize` so that training keeps no extra activation-sized
  residual."""
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None):
    running = nn.merge_param("use_running_average", self.use_running_average,
                             use_running_average)
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    if running:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
      mean, mean2 = wide.mean(axes), jnp.square(wide).mean(axes)
      var = jnp.maximum(0.0, mean2 - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
    # Flax's output dtype: the input's and the parameters' (bfloat16 under mixed precision,
    # where the step casts the parameters), not widened by the float32 statistics.
    dtype = jnp.result_type(x, scale, bias)
    return normalize(x, mean, jax.lax.rsqrt(var + self.epsilon) * scale, bias).astype(dtype)
