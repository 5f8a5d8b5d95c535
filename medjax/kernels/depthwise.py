"""Depthwise convolutions (one input channel per group) as fused sums of shifted views.

XLA:CPU runs grouped convolutions as a generic loop; EfficientNet's depthwise layers are
instead a sum of ``kh * kw`` scaled views (one vectorised pass), with a flipped-kernel input
gradient and a cache-chunked kernel gradient. :mod:`medjax.kernels.convolution` routes
them here; single-channel kernels use :func:`depthwise_sum` as well.
"""
import functools

import jax
import jax.numpy as jnp

from medjax.kernels.precision import accumulation_dtype
from medjax.kernels.windows import (batch_chunk, explicit_pads, sum_over_batch_chunks,
                                    window_views)

# Floats of padded input and output gradient per batch chunk of a depthwise kernel
# gradient (:func:`_depthwise_kernel_grad`); chunks of 2 ** 19 were the fastest measured
# over EfficientNet-Lite0's depthwise layers (docs/performance.md).
DEPTHWISE_GRAD_CHUNK_FLOATS = 2 ** 19


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
  """Depthwise convolution (``feature_group_count = C``, kernel ``(kh, kw, 1, C)``) as a sum
  of ``kh * kw`` shifted, strided slices of the padded input, each scaled per channel.

  XLA:CPU runs grouped convolutions as a generic loop; this elementwise form it fuses into
  one vectorised pass over the output. The kernel gradient is
  :func:`_depthwise_kernel_grad`'s.
  """
  strides = tuple(strides)
  pads = explicit_pads(x.shape[1:3], kernel.shape[:2], padding, strides)
  return _depthwise(x, kernel, strides, pads)


def depthwise_sum(x, kernel, strides, pads):
  """The sum of scaled views, accumulated in float32 whatever ``x``'s dtype: in bfloat16
  XLA:CPU would convert and write out every view before adding them."""
  dtype = x.dtype
  x = jnp.pad(x.astype(accumulation_dtype(dtype)), ((0, 0), *pads, (0, 0)))
  kernel = kernel.astype(x.dtype)
  return sum(view * kernel[i, j, 0]
             for (i, j), view in window_views(x, kernel.shape[:2], strides)).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise(x, kernel, strides, pads):
  return depthwise_sum(x, kernel, strides, pads)


def _depthwise_fwd(x, kernel, strides, pads):
  return depthwise_sum(x, kernel, strides, pads), (x, kernel)


def _depthwise_bwd(strides, pads, residuals, g):
  x, kernel = residuals
  dx = _depthwise_input_grad(g.astype(accumulation_dtype(x.dtype)), kernel, strides, pads,
                             x.shape)
  dkernel = _depthwise_kernel_grad(x, g, kernel.shape[:2], strides, pads)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _depthwise_input_grad(g, kernel, strides, pads, x_shape):
  """``dL/dx`` of :func:`_depthwise_sum`. At stride 1 it is the same sum over ``g`` padded
  to "full" with the kernel flipped, the forward pass's fast form; the transpose of the
  slices that autodiff gives instead is one slower pass with a bounds test per tap and
  element. Strided kernels keep the transpose (a polyphase split of the flipped form was
  no faster, docs/performance.md)."""
  (kh, kw), ((top, bottom), (left, right)) = kernel.shape[:2], pads
  full = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
  if tuple(strides) == (1, 1) and min(min(pair) for pair in full) >= 0:
    return depthwise_sum(g, kernel[::-1, ::-1], (1, 1), full)
  x_wide = jax.ShapeDtypeStruct(x_shape, g.dtype)
  dx, = jax.linear_transpose(lambda v: depthwise_sum(v, kernel, strides, pads), x_wide)(g)
  return dx


def _depthwise_kernel_grad(x, g, window, strides, pads,
                           chunk_floats: int = DEPTHWISE_GRAD_CHUNK_FLOATS):
  """``dL/dkernel[i, j, 0, c] = sum_{b,h,w} x_pad[b, h*sh + i, w*sw + j, c] g[b, h, w, c]``,
  accumulated over batch chunks by ``sum_over_batch_chunks``.

  Differentiating the sum of slices directly makes XLA keep every tap's shifted copy of the
  whole batch for the backward pass (``kh * kw`` activation-sized copies written, then
  read); per cache-sized chunk the shifted views are made and reduced while still in cache.
  Narrow inputs are widened before the padding and the loop: XLA:CPU pads bfloat16 in
  float32 and rounds back, and inside the loop it redid that round trip for each tap's read
  (2-3x slower).
  """
  wide = accumulation_dtype(x.dtype)
  x, g = jnp.pad(x.astype(wide), ((0, 0), *pads, (0, 0))), g.astype(wide)
  batch = x.shape[0]
  chunk = batch_chunk(batch, x[0].size + g[0].size, chunk_floats)

  total = sum_over_batch_chunks(
      lambda x, g: _depthwise_taps(x, g, window, strides),
      jnp.zeros((window[0] * window[1], g.shape[-1]), jnp.float32), x, g, chunk)
  return total.reshape(*window, 1, g.shape[-1])


def _depthwise_taps(x, g, window, strides):
  """Per tap, ``sum_{b,h,w} view * g`` over one batch chunk, all taps in one variadic reduce:
  XLA:CPU then reads each chunk once, where one reduction per tap (which it hands to
  YNNPACK) writes every tap's product out first."""
  products = [view * g for _, view in window_views(x, window, strides)]
  sums = jax.lax.reduce(products, [jnp.zeros((), g.dtype)] * len(products),
                        lambda a, b: [p + q for p, q in zip(a, b)], (0, 1, 2))
  return jnp.stack(sums)
