"""Stride-1 convolution as one matrix product over patches, for wide layers on small maps.

On the CAE's 6 x 6 or 7 x 7 maps at 128-4096 channels XLA:CPU's own convolution runs well
below its matrix-product rate, and in bfloat16 below its float32 rate; one product over
patches runs at that rate in either dtype (docs/performance.md). :func:`medjax.kernels.conv`
chooses it (``conv_algorithm`` "patches").
"""
import functools

import jax
import jax.numpy as jnp

from medjax.kernels import matmul as mm
from medjax.kernels.precision import accumulation_dtype
from medjax.kernels.windows import batch_chunk, sum_over_batch_chunks, window_views


def _patches(x, window, pads):
  """``x``'s ``window`` patches, tap-major along channels: ``(B, Ho, Wo, kh * kw * C)``."""
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  return jnp.concatenate([view for _, view in window_views(x, window, (1, 1))], axis=-1)


def _shift_sum(z, window, pads):
  """Per-tap products ``z`` ``(B, H, W, kh * kw * O)`` of every input pixel, summed into the
  output pixel each tap feeds: ``(B, Ho, Wo, O)``."""
  taps = window[0] * window[1]
  out = z.shape[-1] // taps
  z = jnp.pad(z, ((0, 0), *pads, (0, 0)))
  return sum(view[..., t * out:(t + 1) * out]
             for t, (_, view) in enumerate(window_views(z, window, (1, 1))))


def _tap_major(kernel):
  """HWIO ``kernel`` as ``(C, kh * kw * O)``: every tap's ``C x O`` matrix side by side."""
  kh, kw, c, o = kernel.shape
  return jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c, kh * kw * o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def patches_conv(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
  """Stride-1 convolution as one matrix product, on the narrower channel side.

  With fewer input than output channels, the ``kh * kw * C`` patches of ``x`` times the
  kernel as a ``(kh * kw * C, O)`` matrix (im2col); with fewer outputs, ``x`` times every
  tap's matrix at once, ``(C, kh * kw * O)``, and each tap's product shifted onto the
  output pixel it feeds. Either way the patch array is ``kh * kw`` times the narrower
  side. All three products (value and both gradients) go through :mod:`matmul`'s fast
  forms, so in bfloat16 they run at its rate; the residuals are ``x`` and the kernel, not the
  patch array.
  """
  return _patches_fwd(x, kernel, pads)[0]


def _patches_fwd(x, kernel, pads):
  kh, kw, c, o = kernel.shape
  if c <= o:
    p = _patches(x, (kh, kw), pads)
    y = mm.matmul(p.reshape(-1, p.shape[-1]), kernel.reshape(-1, o)).reshape(*p.shape[:3], o)
  else:
    z = jnp.dot(x.reshape(-1, c), _tap_major(kernel),
                preferred_element_type=accumulation_dtype(x.dtype))
    y = _shift_sum(z.reshape(*x.shape[:3], -1), (kh, kw), pads).astype(x.dtype)
  return y, (x, kernel)


def _patches_bwd(pads, residuals, g):
  x, kernel = residuals
  kh, kw, c, o = kernel.shape
  g2 = g.reshape(-1, o)
  if c <= o:
    p = _patches(x, (kh, kw), pads)
    dkernel = mm.tn(p.reshape(-1, p.shape[-1]), g2).reshape(kernel.shape)
    # The patches' gradient overlaps kh * kw times per pixel: summed in the accumulation
    # dtype that mm.nt returns.
    dp = mm.nt(g2, kernel.reshape(-1, o)).reshape(p.shape)
    x_wide = jax.ShapeDtypeStruct(x.shape, dp.dtype)
    dx, = jax.linear_transpose(lambda v: _patches(v, (kh, kw), pads), x_wide)(dp)
    dx = dx.astype(x.dtype)
  else:
    z = jax.ShapeDtypeStruct((*x.shape[:3], kh * kw * o), g.dtype)
    dz, = jax.linear_transpose(lambda v: _shift_sum(v, (kh, kw), pads), z)(g)
    dz = dz.reshape(-1, kh * kw * o)
    dx = mm.nt(dz, _tap_major(kernel)).astype(x.dtype).reshape(x.shape)
    dkernel = jnp.transpose(mm.tn(x.reshape(-1, c), dz).reshape(c, kh, kw, o), (1, 2, 0, 3))
  return dx, dkernel.astype(kernel.dtype)


patches_conv.defvjp(_patches_fwd, _patches_bwd)


def patches_kernel_grad(x, g, window, pads, chunk_floats: int) -> jax.Array:
  """``dL/dkernel`` of a stride-1 convolution as ``patches^T @ g``, summed over batch chunks
  (``sum_over_batch_chunks``) so that each chunk's patch array is made and contracted while
  in cache.

  For one input channel the patch array is only ``kh * kw`` floats per pixel, and this one
  product per chunk beats both XLA's kernel gradient and the per-row form (the kernel
  gradient of IRMA's 3 x 3, 1 -> 20 conv1, docs/performance.md). ``chunk_floats`` bounds a
  chunk's patches plus output gradient.
  """
  taps, channels, out = window[0] * window[1], x.shape[-1], g.shape[-1]
  batch = x.shape[0]
  chunk = batch_chunk(batch, g[0].size + g[0].size // out * taps * channels, chunk_floats)

  def chunk_product(x, g):
    return jnp.einsum("bhwk,bhwo->ko", _patches(x, window, pads), g,
                      preferred_element_type=jnp.float32)

  total = sum_over_batch_chunks(chunk_product, jnp.zeros((taps * channels, out), jnp.float32),
                                x, g, chunk)
  return total.reshape(*window, channels, out)
