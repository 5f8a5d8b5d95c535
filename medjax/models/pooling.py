"""Pooling with PyTorch/Caffe output-size rules, so imported networks see the same grids.

Flax's ``max_pool``/``avg_pool`` floor the output size. Caffe always, and torch with
``ceil_mode=True`` (GoogLeNet), round up; torch's ``AdaptiveAvgPool2d`` (AlexNet, VGG,
GoogLeNet heads) uses per-cell windows. At other input sizes than the published one these
differ by whole rows of features, so the rules are reproduced exactly here (NHWC).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _ceil_padding(size: int, window: int, stride: int, pad: int) -> tuple[int, int]:
  out = math.ceil((size + 2 * pad - window) / stride) + 1
  if (out - 1) * stride >= size + pad:  # torch: the last window must start inside the input.
    out -= 1
  return pad, max((out - 1) * stride + window - size - pad, 0)


def max_pool_ceil(x: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """``torch.nn.MaxPool2d(window, stride, pad, ceil_mode=True)`` (Caffe's rounding)."""
  padding = (_ceil_padding(x.shape[1], window, stride, pad),
             _ceil_padding(x.shape[2], window, stride, pad))
  return nn.max_pool(x, (window, window), (stride, stride), padding=padding)


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """``torch.nn.AdaptiveAvgPool2d``: cell ``i`` averages rows ``floor(i*H/out)`` to
  ``ceil((i+1)*H/out)``; an input smaller than ``output_size`` is repeated, as in torch."""
  h, w = x.shape[1:3]
  oh, ow = output_size
  if (h, w) == (oh, ow):
    return x
  if h % oh == 0 and w % ow == 0:
    return nn.avg_pool(x, (h // oh, w // ow), (h // oh, w // ow))
  rows = []
  for i in range(oh):
    r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
    cols = []
    for j in range(ow):
      c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
      cols.append(jnp.mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)))
    rows.append(jnp.stack(cols, axis=1))
  return jnp.stack(rows, axis=1)
