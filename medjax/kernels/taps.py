"""Two stride-1 convolutions whose value XLA:CPU runs well but whose gradient it does not,
each with its own custom VJP: :func:`tap_grad_conv` (few-channel kernels, the kernel
gradient by matmuls one kernel row at a time) and :func:`single_channel_conv` (one input
channel, a sum of shifted views). :mod:`medjax.kernels.convolution` says where each is used.
"""
import functools

import jax
import jax.numpy as jnp

from medjax.kernels.depthwise import depthwise_sum
from medjax.kernels.patches import patches_kernel_grad
from medjax.kernels.precision import accumulation_dtype
from medjax.kernels.windows import batch_chunk, sum_over_batch_chunks, window_views

# Floats of input and output gradient per batch chunk in :func:`_tap_kernel_grad`, so that
# the chunk stays in cache while its taps are contracted (the best chunks measured held
# 0.3-0.7 M floats).
TAP_GRAD_CHUNK_FLOATS = 2 ** 20
# Floats of patches and output gradient per batch chunk of its kernel gradient.
SINGLE_CHANNEL_GRAD_CHUNK_FLOATS = 2 ** 20


def _xla(x, kernel, pads):
  """XLA's own stride-1 NHWC/HWIO convolution, whose value and input gradient are kept."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), pads,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _tap_kernel_grad(x, g, kernel_hw, pads, chunk_floats):
  """``dL/dkernel`` of a stride-1 convolution, one kernel row at a time.

  ``dW[i, j] = sum_{b,h,w} x_pad[b, h + i, w + j, :]^T g[b, h, w, :]``, accumulated over
  batch chunks (``sum_over_batch_chunks``) so that each chunk is read from cache. Per
  chunk, the ``kw`` column shifts of the padded ``x`` are put side by side (``kw * C``
  channels), and each kernel row ``i`` is then one ``(O x pixels) @ (pixels x kw * C)``
  matmul against that array's rows ``i .. i + H``: ``x`` is copied ``kw`` times instead of
  ``kh * kw`` and the matrices are wider than one matmul per tap would make them.
  ``(O x pixels)`` is the orientation XLA:CPU runs faster.
  """
  kh, kw = kernel_hw
  batch, out_h, out_w, _ = g.shape
  channels = x.shape[-1]
  chunk = batch_chunk(batch, x[0].size + g[0].size, chunk_floats)

  def chunk_rows(x, g):
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0),
                                                (0, 0, 0)))
    columns = jnp.concatenate([view for _, view in window_views(x, (1, kw), (1, 1))], axis=-1)
    return jnp.stack([jnp.einsum("bhwk,bhwo->ok", columns[:, i:i + out_h], g,
                                 preferred_element_type=jnp.float32) for i in range(kh)])

  total = sum_over_batch_chunks(
      chunk_rows, jnp.zeros((kh, g.shape[-1], kw * channels), jnp.float32), x, g, chunk)
  return jnp.transpose(total.reshape(kh, g.shape[-1], kw, channels), (0, 2, 3, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def tap_grad_conv(x: jax.Array, kernel: jax.Array, pads,
                  chunk_floats: int = TAP_GRAD_CHUNK_FLOATS) -> jax.Array:
  """Stride-1 direct convolution whose kernel gradient is :func:`_tap_kernel_grad`.

  The value and the input gradient are XLA's own (the direct convolution and its
  transpose). XLA:CPU computes the kernel gradient as a convolution whose window is the
  whole output gradient, after transposing the activations to put the batch innermost,
  which is slow when either channel count is small. ``pads`` is ``((top, bottom), (left,
  right))``; ``chunk_floats`` bounds a batch chunk of the kernel gradient.
  """
  return _xla(x, kernel, pads)


def _tap_grad_conv_fwd(x, kernel, pads, chunk_floats):
  return tap_grad_conv(x, kernel, pads, chunk_floats), (x, kernel)


def _tap_grad_conv_bwd(pads, chunk_floats, residuals, g):
  x, kernel = residuals
  dx, = jax.linear_transpose(lambda v: _xla(v, kernel, pads), x)(g)
  dkernel = _tap_kernel_grad(x, g, kernel.shape[:2], pads, chunk_floats).astype(kernel.dtype)
  return dx, dkernel


tap_grad_conv.defvjp(_tap_grad_conv_fwd, _tap_grad_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def single_channel_conv(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
  """Stride-1 convolution of a one-channel ``x`` with an HWIO ``(kh, kw, 1, O)`` kernel as
  the sum of ``kh * kw`` shifted views, each times its tap's ``O`` weights.

  XLA:CPU convolves one input channel at a few GFLOP/s; the sum of views is one fused
  pass writing the output once. The kernel gradient is one product of patches with the
  output gradient per batch chunk (:func:`patches_kernel_grad`); the input gradient, which
  a first layer does not need, is the sum's transpose.
  """
  return depthwise_sum(x, kernel, (1, 1), pads)


def _single_channel_fwd(x, kernel, pads):
  return single_channel_conv(x, kernel, pads), (x, kernel)


def _single_channel_bwd(pads, residuals, g):
  x, kernel = residuals
  x_wide = jax.ShapeDtypeStruct(x.shape, accumulation_dtype(x.dtype))
  dx, = jax.linear_transpose(lambda v: depthwise_sum(v, kernel, (1, 1), pads), x_wide)(
      g.astype(x_wide.dtype))
  dkernel = patches_kernel_grad(x, g, kernel.shape[:2], pads, SINGLE_CHANNEL_GRAD_CHUNK_FLOATS)
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


single_channel_conv.defvjp(_single_channel_fwd, _single_channel_bwd)
