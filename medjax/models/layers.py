"""Layers the papers use that Flax does not ship."""
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
  window sum) so that ``d^-b`` is computed once, in the forward pass: autodiff of the
  power evaluated three powers per element, and the modified AlexNet's train step went
  from 0.71 to 0.61 s on CPU (batch 64, 2 cores).
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


# Kernels with at least this many taps per channel pair are convolved by FFT on CPU.
# XLA:CPU's direct forward convolution is on par with PyTorch's for 3x3 and 5x5 kernels, but
# for LeNet's 15x15 ones the FFT route is 4-16x faster (forward / gradients, measured in
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


def explicit_pads(x_hw, kernel_hw, padding,
                   strides=(1, 1)) -> tuple[tuple[int, int], tuple[int, int]]:
  """``padding`` ("SAME", "VALID" or per-side pairs) as ``((top, bottom), (left, right))``."""
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x_hw, kernel_hw, tuple(strides), padding)
  return tuple(tuple(int(p) for p in pair) for pair in padding)


def window_views(x: jax.Array, window, strides) -> list[tuple[tuple[int, int], jax.Array]]:
  """For each tap ``(i, j)`` of ``window`` in row-major order, the strided view of the
  (already padded) NHWC ``x`` that every output position reads at that tap: output
  ``(r, c)`` of tap ``(i, j)`` is ``x[:, r * sh + i, c * sw + j]``. Slices, fused by XLA."""
  (kh, kw), (sh, sw) = window, strides
  out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1

  def view(i, j):
    end = (x.shape[0], i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, x.shape[3])
    return jax.lax.slice(x, (0, i, j, 0), end, (1, sh, sw, 1))
  return [((i, j), view(i, j)) for i in range(kh) for j in range(kw)]


def fft_conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  """Stride-1 cross-correlation of NHWC ``x`` with an HWIO ``kernel`` through 2-D real FFTs.

  The same function as ``lax.conv_general_dilated(x, kernel, (1, 1), padding)`` up to
  float32 round-off. After explicit padding the input is transformed at a size ``n`` no
  smaller than itself, so the circular correlation never wraps onto the outputs kept; the
  channel contraction becomes, per frequency, a complex matrix product over channels.
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


def _direct(x, kernel, strides, padding, feature_group_count=1):
  return jax.lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=feature_group_count)


# Floats of input and output gradient per batch chunk in :func:`_tap_kernel_grad` (4 MiB:
# the chunk stays in cache while its taps are contracted). Measured on IRMA's 3x3 kernel
# gradients at batch 256 (CPU s, load ~5), chunks of 1 / 2 / 4 / 8 / 16 / 32 images:
# 128 x 128, 1 -> 20: 0.31 / 0.16 / 0.18; 64 x 64, 20 -> 20: 0.26 / 0.16 / 0.17 / 0.21 /
# 0.24; 32 x 32, 20 -> 20 (4 images up): 0.046 / 0.039 / 0.044 / 0.056. The best chunks
# hold 0.3-0.7 M floats; this bound picks 2, 4 and 16 images, and 1 at 128 x 128 with 20
# channels, where 1 to 4 images were within 10 % of each other.
TAP_GRAD_CHUNK_FLOATS = 2 ** 20


def batch_chunk(batch: int, size_per_example: int, budget: int) -> int:
  """The largest divisor of ``batch`` whose chunk holds at most ``budget`` (floats, pixels...)
  at ``size_per_example`` each; 1 if not even one example fits."""
  chunk = max(1, min(batch, budget // size_per_example))
  while batch % chunk:
    chunk -= 1
  return chunk


def _tap_kernel_grad(x, g, kernel_hw, pads):
  """``dL/dkernel`` of a stride-1 convolution, one kernel row at a time.

  ``dW[i, j] = sum_{b,h,w} x_pad[b, h + i, w + j, :]^T g[b, h, w, :]``, accumulated over
  batch chunks by a ``scan`` so that each chunk is read from cache. Per chunk, the ``kw``
  column shifts of the padded ``x`` are put side by side (``kw * C`` channels), and each
  kernel row ``i`` is then one ``(O x pixels) @ (pixels x kw * C)`` matmul against that
  array's rows ``i .. i + H``. Against one matmul per tap this copies ``x`` ``kw`` times
  instead of ``kh * kw`` and multiplies wider matrices: IRMA's 3x3 kernel gradients at
  batch 256 took 350 / 84 / 21 ms against 413 / 98 / 25 (20 -> 20 at 128 / 64 / 32 pixels
  square), and the IRMA C step 1.63 against 1.73 s. The ``(O x pixels)`` orientation is
  the one XLA:CPU ran faster (0.42 against 0.87 CPU-s for the CAE's 4096 -> 256 on 6 x 6
  at batch 64; 551 against 350 ms here).
  """
  kh, kw = kernel_hw
  batch, out_h, out_w, _ = g.shape
  channels = x.shape[-1]
  chunk = batch_chunk(batch, x[0].size + g[0].size, TAP_GRAD_CHUNK_FLOATS)

  def add_chunk(total, chunk_xg):
    x, g = chunk_xg
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0),
                                                (0, 0, 0)))
    columns = jnp.concatenate([view for _, view in window_views(x, (1, kw), (1, 1))], axis=-1)
    rows = [jnp.einsum("bhwk,bhwo->ok", columns[:, i:i + out_h], g,
                       preferred_element_type=jnp.float32) for i in range(kh)]
    return total + jnp.stack(rows), None

  split = lambda a: a.reshape(batch // chunk, chunk, *a.shape[1:])
  total = jnp.zeros((kh, g.shape[-1], kw * channels), jnp.float32)
  total, _ = jax.lax.scan(add_chunk, total, (split(x), split(g)))
  return jnp.transpose(total.reshape(kh, g.shape[-1], kw, channels), (0, 2, 3, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tap_grad_conv(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
  """Stride-1 direct convolution whose kernel gradient is :func:`_tap_kernel_grad`.

  The value and the input gradient are XLA's own (the direct convolution and its
  transpose). XLA:CPU computes the kernel gradient as a convolution whose window is the
  whole output gradient, after transposing the activations to put the batch innermost;
  with YNNPACK's convolutions that took 2.5 CPU-s for IRMA's 3x3 20 -> 20 layers at
  128 x 128, batch 256, against 0.75 s here. With the Eigen kernels that
  ``medjax.compiler`` selects it is closer (128 x 128, 1 -> 20: 0.14 s wall against 0.09;
  20 -> 20: 0.55 against 0.65; 64 x 64: 0.13 against 0.11), but the whole IRMA C step
  still took 2.75 s with it against 2.25 s with this. ``pads`` is
  ``((top, bottom), (left, right))``.
  """
  return _direct(x, kernel, (1, 1), pads)


def _tap_grad_conv_fwd(x, kernel, pads):
  return tap_grad_conv(x, kernel, pads), (x, kernel)


def _tap_grad_conv_bwd(pads, residuals, g):
  x, kernel = residuals
  dx, = jax.linear_transpose(lambda v: _direct(v, kernel, (1, 1), pads), x)(g)
  dkernel = _tap_kernel_grad(x, g, kernel.shape[:2], pads).astype(kernel.dtype)
  return dx, dkernel


tap_grad_conv.defvjp(_tap_grad_conv_fwd, _tap_grad_conv_bwd)


# Stride-1 kernels under FFT_MIN_TAPS with at most this many input or output channels take
# tap_grad_conv's kernel gradient on CPU; wider ones stay direct (XLA's Eigen convolution,
# see medjax.compiler). Measured on 2 cores: IRMA C's step (1 and 20 channels) took 2.25 s
# with tap_grad_conv against 2.75 s direct; the CAE's (256 <-> 4096 channels on 6 x 6,
# batch 512) 5.35 s direct, 6.9 s as im2col/col2im matmuls (the route this cut used to
# select, removed) and, at batch 128, 1.35 direct against 1.53 with tap_grad_conv.
TAP_GRAD_MAX_CHANNELS = 127


def depthwise_conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="SAME") -> jax.Array:
  """Depthwise convolution (``feature_group_count = C``, kernel ``(kh, kw, 1, C)``) as a sum
  of ``kh * kw`` shifted, strided slices of the padded input, each scaled per channel.

  The same function as ``lax.conv_general_dilated(..., feature_group_count=C)`` up to
  float32 round-off. XLA:CPU runs grouped convolutions as a generic loop: on
  EfficientNet-Lite0's depthwise layers at batch 8 it took 8-70 ms per layer against
  0.3-1.8 ms for this elementwise form (56 x 56 x 144, 3 x 3: 71.9 against 1.6 ms), which
  XLA fuses into one vectorised pass over the output.
  """
  window = kernel.shape[:2]
  x = jnp.pad(x, ((0, 0), *explicit_pads(x.shape[1:3], window, padding, strides), (0, 0)))
  return sum(view * kernel[i, j, 0] for (i, j), view in window_views(x, window, strides))


def conv_algorithm(kernel_shape, strides, feature_group_count: int = 1) -> str:
  """How :func:`conv` convolves an HWIO ``kernel_shape``: "fft", "pointwise", "tap_grad",
  "depthwise" or "direct".

  On CPU, depthwise kernels (one input channel per group, as many outputs as groups) go by
  :func:`depthwise_conv` at any stride; stride-1 kernels with at least ``FFT_MIN_TAPS`` taps
  by FFT if they have more than one input channel, else directly; stride-1 1 x 1 kernels
  as one ``x @ W`` over the channel axis (XLA:CPU's convolution took 1.7x as long as the
  matmul over EfficientNet-Lite0's nineteen 1 x 1 layers at batch 8: 33.5 against
  19.3 ms); other small stride-1 kernels by
  :func:`tap_grad_conv` when either channel count is at most ``TAP_GRAD_MAX_CHANNELS``,
  else directly. Accelerators run direct convolutions and their gradients well at
  any size, and other strided or grouped convolutions stay direct everywhere (a
  full-resolution FFT or per-tap products would compute outputs the stride discards).
  """
  kh, kw, c, o = kernel_shape
  if jax.default_backend() != "cpu":
    return "direct"
  if feature_group_count != 1:
    return "depthwise" if c == 1 and o == feature_group_count else "direct"
  if tuple(strides) != (1, 1):
    return "direct"
  if kh * kw >= FFT_MIN_TAPS:
    # With one input channel the FFT's transforms outweigh its savings: LeNet's conv0
    # (256 x 256 x 1 -> 20, 15 x 15, batch 20) took 104 / 100 ms forward / kernel
    # gradient directly against 190 / 116 ms by FFT, and the LeNet step 3.15 against 3.58 s.
    return "fft" if c > 1 else "direct"
  if kh == kw == 1:
    return "pointwise"
  return "tap_grad" if min(c, o) <= TAP_GRAD_MAX_CHANNELS else "direct"


def conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="SAME",
         feature_group_count: int = 1) -> jax.Array:
  """2-D NHWC/HWIO convolution by the fastest algorithm here (:func:`conv_algorithm`)."""
  algorithm = conv_algorithm(kernel.shape, strides, feature_group_count)
  if algorithm == "fft":
    return fft_conv(x, kernel, padding)
  if algorithm == "depthwise":
    return depthwise_conv(x, kernel, strides, padding)
  if algorithm == "direct":
    return _direct(x, kernel, strides, padding, feature_group_count)
  pads = explicit_pads(x.shape[1:3], kernel.shape[:2], padding)
  if algorithm == "pointwise":
    return jnp.dot(jnp.pad(x, ((0, 0), *pads, (0, 0))), kernel[0, 0])
  return tap_grad_conv(x, kernel, pads)


class Conv(nn.Module):
  """A drop-in for ``nn.Conv`` (2-D, NHWC) that routes through :func:`conv`.

  Parameters are named and shaped as ``nn.Conv``'s (``kernel`` HWIO with ``C / groups``
  input channels, ``bias``), so checkpoints and weight importers are unaffected by the
  choice of algorithm.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] | int = (1, 1)
  padding: str | tuple = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    groups = self.feature_group_count
    if x.shape[-1] % groups:
      raise ValueError(f"{self.name}: {x.shape[-1]} input channels do not split into "
                       f"feature_group_count={groups} groups")
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1] // groups, self.features))
    strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    y = conv(x, kernel, strides, self.padding, groups)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y
