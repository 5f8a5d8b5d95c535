"""Depthwise convolution as a sum of k*k shifted, scaled copies of the input.

XLA:CPU lowers a ``feature_group_count = C`` convolution, and above all its gradient with
respect to the input, to a generic grouped-convolution loop that does little work per
memory access; EfficientNet's fine-tuning step spends most of its time there. Written as
``sum_{i,j} x[shifted by (i, j)] * w[i, j]`` the same arithmetic is k*k fused
elementwise multiply-adds whose gradients are again slices, pads and multiply-adds, which
XLA vectorises well. :class:`DepthwiseConv` stores its kernel as ``nn.Conv`` does
(``kernel`` of shape ``(k, k, 1, C)``), so imported weights and checkpoints fit either form.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
  """TF/``lax`` "SAME": the output has ``ceil(size / stride)`` rows; any odd extra row of
  padding goes at the end (bottom/right)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def depthwise_conv(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """NHWC depthwise convolution with "SAME" padding; ``kernel`` is ``(k, k, 1, C)``."""
  kh, kw = kernel.shape[:2]
  n, h, w, c = x.shape
  (top, bottom), (left, right) = same_padding(h, kh, stride), same_padding(w, kw, stride)
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  oh, ow = -(-h // stride), -(-w // stride)
  weights = kernel.reshape(kh, kw, c).astype(x.dtype)
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(xp, (0, i, j, 0), (n, i + (oh - 1) * stride + 1,
                                             j + (ow - 1) * stride + 1, c),
                          (1, stride, stride, 1))
      term = tap * weights[i, j]
      out = term if out is None else out + term
  return out


def reference(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
  """The same convolution by ``lax.conv_general_dilated`` (``feature_group_count = C``)."""
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


class DepthwiseConv(nn.Module):
  """A drop-in for a bias-free ``nn.Conv(C, (k, k), feature_group_count=C, padding="SAME")``."""
  kernel_size: int
  strides: int = 1
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, 1, x.shape[-1]))
    return depthwise_conv(x, kernel, self.strides)
