"""Stride-1 convolution through 2-D real FFTs, for kernels with many taps.

The direct convolution's cost grows with the kernel's taps and the FFT's does not, so
:func:`medjax.kernels.conv_algorithm` sends large kernels (LeNet's 15 x 15) here.
"""
import jax
import jax.numpy as jnp

from medjax.kernels.windows import explicit_pads


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

  After explicit padding the input is transformed at a size ``n`` no smaller than itself,
  so the circular correlation never wraps onto the outputs kept; the channel contraction
  becomes, per frequency, a complex matrix product over channels.
  """
  kh, kw = kernel.shape[:2]
  x = jnp.pad(x, ((0, 0), *explicit_pads(x.shape[1:3], (kh, kw), padding), (0, 0)))
  height, width = x.shape[1:3]
  out_h, out_w = height - kh + 1, width - kw + 1
  size = (_fast_fft_size(height), _fast_fft_size(width))
  x_f = jnp.fft.rfft2(jnp.moveaxis(x, 3, 1), s=size)              # (B, C, n, n // 2 + 1)
  k_f = jnp.fft.rfft2(jnp.transpose(kernel, (2, 3, 0, 1)), s=size)  # (C, O, n, n // 2 + 1)
  y_f = jnp.einsum("bcuv,couv->bouv", x_f, jnp.conj(k_f))
  y = jnp.fft.irfft2(y_f, s=size)[:, :, :out_h, :out_w]
  return jnp.moveaxis(y, 1, 3).astype(x.dtype)
