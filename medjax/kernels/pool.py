"""Pools: max-pooling with a gradient XLA:CPU runs fast, and PyTorch/Caffe output sizes.

``max_pool`` with the XLA:CPU kernels is ``nn.max_pool`` with the same values and
gradients: XLA:CPU runs ``nn.max_pool``'s gradient (select-and-scatter) as a reduce-window
over four index arrays and a scatter, which cost a fifth of the modified AlexNet's train
step. ``max_pool_ceil`` and ``adaptive_avg_pool`` reproduce torch's and Caffe's output
sizes, so that imported networks see the same grids: Flax's pools floor the output size,
Caffe always and torch with ``ceil_mode=True`` (GoogLeNet) round up, and torch's
``AdaptiveAvgPool2d`` (AlexNet, VGG, GoogLeNet heads) uses per-cell windows. At other
input sizes than the published one these differ by whole rows of features (NHWC).
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.kernels import choice
from medjax.kernels.precision import accumulation_dtype
from medjax.kernels.windows import explicit_pads, window_views


def _taps(x, window, strides, pads):
  """The shape of ``x`` padded with -inf, and :func:`window_views` of it, in float32 or
  wider: XLA:CPU runs each bfloat16 op in float32 and rounds back, a round trip it repeats
  for every tap that reads the result, while a maximum is the same value in either dtype."""
  x = jnp.pad(x.astype(accumulation_dtype(x.dtype)), ((0, 0), *pads, (0, 0)),
              constant_values=-jnp.inf)
  return x.shape, window_views(x, window, strides)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  views = [view for _, view in _taps(x, window, strides, pads)[1]]
  return functools.reduce(jnp.maximum, views).astype(x.dtype)


def _max_pool_fwd(x, window, strides, pads):
  y = _max_pool(x, window, strides, pads)
  return y, (x, y)


def _max_pool_bwd(window, strides, pads, residuals, g):
  """Each window's gradient goes to its first maximum in row-major order, as XLA's
  select-and-scatter sends it; overlapping windows add up.

  Tap ``(i, j)`` of output ``(r, c)`` reads padded input ``(r * sh + i, c * sw + j)``, i.e.
  block ``(r + i // sh, c + j // sw)`` at phase ``(i % sh, j % sw)`` of the input cut into
  ``sh x sw`` blocks. So each phase's gradient is a sum of the taps' parts shifted by whole
  blocks, all at the output's size, and one interleave of the phases gives ``dx``: no
  interior padding, which XLA:CPU would run as one full-size pass per tap.
  """
  x, y = residuals
  wide = accumulation_dtype(g.dtype)
  y, g = y.astype(wide), g.astype(wide)
  padded_shape, taps = _taps(x, window, strides, pads)
  (sh, sw), (out_h, out_w) = strides, y.shape[1:3]
  blocks_h, blocks_w = -(-padded_shape[1] // sh), -(-padded_shape[2] // sw)
  phases = [[jnp.zeros((y.shape[0], blocks_h, blocks_w, y.shape[3]), g.dtype)] * sw
            for _ in range(sh)]
  taken = None
  for (i, j), view in taps:
    hit = view == y
    part = jnp.where(hit if taken is None else hit & ~taken, g, 0.0).astype(g.dtype)
    taken = hit if taken is None else taken | hit
    (bi, a), (bj, b) = divmod(i, sh), divmod(j, sw)
    phases[a][b] = phases[a][b] + jnp.pad(
        part, ((0, 0), (bi, blocks_h - out_h - bi), (bj, blocks_w - out_w - bj), (0, 0)))
  dx = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, bh, sh, bw, sw, C)
  dx = dx.reshape(y.shape[0], blocks_h * sh, blocks_w * sw, y.shape[3])
  (top, bottom), (left, right) = pads
  return (dx[:, top:padded_shape[1] - bottom, left:padded_shape[2] - right].astype(x.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int] | None = None,
             padding="VALID", *, kernels: str = choice.XLA_CPU) -> jax.Array:
  """``nn.max_pool(x, window, strides, padding)`` (NHWC); with the XLA:CPU kernels the
  window's taps are strided views of the input, the forward pass their elementwise maximum
  and the backward pass selects and block shifts at the output's size."""
  window = tuple(window)
  strides = tuple(strides) if strides is not None else (1, 1)
  if not choice.fast(kernels):
    return nn.max_pool(x, window, strides, padding)
  pads = explicit_pads(x.shape[1:3], window, padding, strides)
  return _max_pool(x, window, strides, pads)


def avg_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int] | None = None,
             padding="VALID", *, kernels: str = choice.XLA_CPU) -> jax.Array:
  """``nn.avg_pool``: XLA:CPU runs it well, so both choices run it (``kernels`` is checked)."""
  choice.fast(kernels)
  return nn.avg_pool(x, tuple(window), tuple(strides) if strides is not None else None,
                     padding)


def _ceil_padding(size: int, window: int, stride: int, pad: int) -> tuple[int, int]:
  out = math.ceil((size + 2 * pad - window) / stride) + 1
  if (out - 1) * stride >= size + pad:  # torch: the last window must start inside the input.
    out -= 1
  return pad, max((out - 1) * stride + window - size - pad, 0)


def max_pool_ceil(x: jax.Array, window: int, stride: int, pad: int = 0, *,
                  kernels: str = choice.XLA_CPU) -> jax.Array:
  """``torch.nn.MaxPool2d(window, stride, pad, ceil_mode=True)`` (Caffe's rounding)."""
  padding = (_ceil_padding(x.shape[1], window, stride, pad),
             _ceil_padding(x.shape[2], window, stride, pad))
  return max_pool(x, (window, window), (stride, stride), padding, kernels=kernels)


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int], *,
                      kernels: str = choice.XLA_CPU) -> jax.Array:
  """``torch.nn.AdaptiveAvgPool2d``: cell ``i`` averages rows ``floor(i*H/out)`` to
  ``ceil((i+1)*H/out)``; an input smaller than ``output_size`` is repeated, as in torch."""
  h, w = x.shape[1:3]
  oh, ow = output_size
  if (h, w) == (oh, ow):
    return x
  if h % oh == 0 and w % ow == 0:
    return avg_pool(x, (h // oh, w // ow), (h // oh, w // ow), kernels=kernels)
  rows = []
  for i in range(oh):
    r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
