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


# Kernels with at least this many taps per channel pair are convolved by FFT on CPU.
# XLA:CPU's direct convolution is on par with PyTorch's for 3x3 and 5x5 kernels, but for
# LeNet's 15x15 ones the FFT route is 4-16x faster (forward / gradients, measured in
# docs/performance.md); 9x9 is a cut well clear of the small kernels.
FFT_MIN_TAPS = 81


def _fast_fft_size(n: int) -> int:
  """The smallest 2^a 3^b 5^c 7^d 11^e >= n: FFTs of such sizes run at full speed."""
  while True:
    m = n
    for p in (2, 3, 5, 7, 11):
      while m % p == 0:
        m //= p
    if m == 1:
      return n
    n += 1


def fft_conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  """Stride-1 cross-correlation of NHWC ``x`` with an HWIO ``kernel`` through 2-D real FFTs.

  The same function as ``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` up to
  float32 round-off. After explicit padding the input is transformed at a size ``n`` no
  smaller than itself, so the circular correlation never wraps onto the outputs kept; the
  channel contraction becomes, per frequency, a complex matrix product over channels.
  """
  kh, kw = kernel.shape[:2]
  pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (1, 1), padding) \
      if isinstance(padding, str) else padding
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  height, width = x.shape[1:3]
  out_h, out_w = height - kh + 1, width - kw + 1
  size = (_fast_fft_size(height), _fast_fft_size(width))
  x_f = jnp.fft.rfft2(jnp.moveaxis(x, 3, 1), s=size)              # (B, C, n, n // 2 + 1)
  k_f = jnp.fft.rfft2(jnp.transpose(kernel, (2, 3, 0, 1)), s=size)  # (C, O, n, n // 2 + 1)
  y_f = jnp.einsum("bcuv,couv->bouv", x_f, jnp.conj(k_f))
  y = jnp.fft.irfft2(y_f, s=size)[:, :, :out_h, :out_w]
  return jnp.moveaxis(y, 1, 3).astype(x.dtype)


def use_fft(kernel_size, strides) -> bool:
  """Whether :func:`conv` takes the FFT route: large stride-1 kernels, on CPU only.

  Accelerators run direct convolutions of any size well, and a strided convolution gains
  nothing from a full-resolution FFT, so those stay direct.
  """
  return (jax.default_backend() == "cpu" and tuple(strides) == (1, 1)
          and kernel_size[0] * kernel_size[1] >= FFT_MIN_TAPS)


def conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
  """2-D NHWC/HWIO convolution by whichever of FFT and direct is faster here (:func:`use_fft`)."""
  if use_fft(kernel.shape[:2], strides):
    return fft_conv(x, kernel, padding)
  return jax.lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Conv(nn.Module):
  """A drop-in for ``nn.Conv`` (2-D, NHWC) that routes through :func:`conv`.

  Parameters are named and shaped as ``nn.Conv``'s (``kernel`` HWIO, ``bias``), so
  checkpoints and weight importers are unaffected by the choice of algorithm.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: str | tuple = "SAME"
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features))
    y = conv(x, kernel, self.strides, self.padding)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y


def _pool_windows(x: jax.Array) -> jax.Array:
  """NHWC -> ``(B, H // 2, 2, W // 2, 2, C)``; an odd last row/column is dropped (VALID)."""
  b, h, w, c = x.shape
  return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``nn.max_pool(x, (2, 2), strides=(2, 2))`` with the same value and the same gradient.

  The gradient of ``nn.max_pool`` is XLA's select-and-scatter, which on CPU takes about
  three times as long as the whole forward and backward written as reshapes (LeNet's
  pools alone cost ~3 s of CPU per step). Here the gradient goes, as select-and-scatter
  sends it, entirely to the first maximum of each window in row-major order, so ties
  (e.g. flat black borders) are resolved identically.
  """
  return jnp.max(_pool_windows(x), axis=(2, 4))


def _max_pool_fwd(x):
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_bwd(residuals, g):
  x, y = residuals
  b, h, w, c = x.shape
  is_max = _pool_windows(x) == y[:, :, None, :, None]
  e00, e01, e10, e11 = (is_max[:, :, i, :, j] for i in (0, 1) for j in (0, 1))
  # Each position takes the gradient only if no earlier position of its window is a maximum.
  first = (e00, e01 & ~e00, e10 & ~(e00 | e01), e11 & ~(e00 | e01 | e10))
  parts = [jnp.where(t, g, 0.0) for t in first]
  rows = [jnp.stack(parts[:2], axis=3), jnp.stack(parts[2:], axis=3)]
  dx = jnp.stack(rows, axis=2).reshape(b, h // 2 * 2, w // 2 * 2, c)
  return (jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
