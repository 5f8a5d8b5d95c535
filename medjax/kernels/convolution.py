"""2-D convolution (NHWC, HWIO) by the algorithm XLA:CPU runs fastest for each shape.

XLA:CPU's own convolution is good for small kernels and wide layers on large maps, but
slow for large kernels, for one input channel, for the kernel gradient of few-channel
layers (on some CPUs), for depthwise and 1 x 1 kernels, for wide layers on small maps, and
in bfloat16; :func:`conv_algorithm` sends each of those to an equivalent form built from
ops XLA:CPU does run well (FFTs, matmuls, fused elementwise slices), and, where the custom
call is built, most of them to oneDNN's convolutions (:mod:`medjax.kernels.onednn`),
faster still where measured (docs/performance.md). Every form is the same
function as ``lax.conv_general_dilated`` up to float32 round-off, in value and gradients;
docs/performance.md has what each one bought.
"""
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from medjax.kernels import choice, isa, onednn
from medjax.kernels import matmul as mm
from medjax.kernels.depthwise import depthwise_conv
from medjax.kernels.fft import fft_conv
from medjax.kernels.patches import patches_conv
from medjax.kernels.precision import accumulation_dtype, is_narrow
from medjax.kernels.taps import single_channel_conv, tap_grad_conv
from medjax.kernels.windows import explicit_pads
from medjax.kernels.winograd import MAX_PAD as WINOGRAD_MAX_PAD
from medjax.kernels.winograd import winograd_conv

# Kernels with at least this many taps per channel pair are convolved by FFT: the direct
# route's cost grows with the taps, the FFT's does not; 9 x 9 is a cut well clear of the
# 3 x 3 and 5 x 5 kernels the direct route handles as well as PyTorch.
FFT_MIN_TAPS = 81

# Grouped (not depthwise) convolutions with at most this many groups run as one convolution
# per group (docs/performance.md); more groups, as in ResNeXt, would unroll into many small
# convolutions, which was not measured.
SPLIT_MAX_GROUPS = 8

# Stride-1 kernels with at most this many input or output channels take tap_grad_conv's
# kernel gradient on CPUs with AVX-512; wider ones stay direct, where XLA's own kernel
# gradient is faster. With AVX2 only, XLA's was faster at every such shape measured.
TAP_GRAD_MAX_CHANNELS = 127

# With AVX2, XLA's convolution gradients run 11-21 % faster on input channels padded with
# zeros to a multiple of the vector's 8 floats (20, 28, 36, 44 channels measured; 50 even);
# at 10 and 12 channels padding did not pay, hence the floor.
PAD_CHANNELS_MULTIPLE = 8
PAD_CHANNELS_MIN = 20

# Stride-1 kernels on one input channel with at most this many taps are a sum of shifted
# views (:func:`single_channel_conv`): at 3 x 3 twice as fast as XLA's convolution with its
# kernel gradient; at 5 x 5 the 25 views cost more than they save.
SINGLE_CHANNEL_MAX_TAPS = 9

# Wider stride-1 kernels on maps of at most this many pixels are matrix products over
# patches (:func:`patches_conv`): with gradients they beat XLA's direct convolution 1.5-1.8x
# on 6 x 6 and 7 x 7 maps (AlexNet conv5, EfficientNet's head map) and lose on 13 x 13.
PATCHES_MAX_PIXELS = 49
# Of those, float32 3 x 3 kernels go by Winograd's F(m x m, 3 x 3) (:func:`winograd_conv`),
# with gradients 1.4-2x faster at the CAE's and GoogLeNet's sizes; where oneDNN is built
# (its matmul then does the products), so do layers this wide on maps of these sizes: 1.2-1.4x
# over its direct convolution on VGG's 56 x 56 and 28 x 28 blocks, not on smaller or larger
# maps (docs/performance.md). bfloat16 keeps the patches or oneDNN: Winograd's round-off was
# 1.4-16x theirs there, and F(2 x 2), the closest, ran no faster than oneDNN's.
WINOGRAD_MIN_CHANNELS = 256
WINOGRAD_MAP_PIXELS = (28 * 28, 56 * 56)

# What oneDNN's convolutions (:mod:`medjax.kernels.onednn`) replace where they are built:
# the XLA forms they beat 1.2-2x in float32 and 2.5-5x in bfloat16 (docs/performance.md),
# and in bfloat16 also those that beat XLA's float32 convolution but not oneDNN's bfloat16
# one. Large multi-channel kernels stay with the FFT: on LeNet's second layer it beat
# oneDNN by 1.1x unpadded and 3-6x with "SAME" padding.
ONEDNN_FORMS = ("direct", "tap_grad", "padded_channels")
ONEDNN_NARROW_FORMS = ONEDNN_FORMS + ("single_channel", "patches")
# Depthwise kernels take oneDNN's forward pass (1.4-8x over depthwise_conv's on
# EfficientNet-Lite0's layers) and its kernel gradient up to this many taps (even to 14x; on
# 5 x 5 kernels up to 4.7x slower in bfloat16, mixed in float32); the input gradient stays
# depthwise_conv's, except strided 5 x 5 ones in float32 (3.6-10x). 1 x 1 kernels go to
# oneDNN in bfloat16 on maps of more than PATCHES_MAX_PIXELS pixels (1.3-4.5x over the
# bfloat16 matrix product); on 7 x 7 maps, and in float32, the two were even.
ONEDNN_DEPTHWISE_GRAD_MAX_TAPS = 9


def direct(x, kernel, strides=(1, 1), padding="SAME", feature_group_count=1):
  """The reference: ``lax.conv_general_dilated`` in NHWC/HWIO, as ``nn.Conv`` calls it."""
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  return jax.lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=feature_group_count)


def conv_algorithm(kernel_shape, strides, feature_group_count: int = 1, *,
                   kernels: str = choice.XLA_CPU, x_hw=None, vector_floats: int | None = None,
                   narrow: bool = False, use_onednn: bool | None = None) -> str:
  """How :func:`conv` convolves an HWIO ``kernel_shape`` over maps of ``x_hw`` pixels:
  "onednn", "fft", "pointwise", "single_channel", "tap_grad", "padded_channels", "patches",
  "winograd", "depthwise", "split_groups" or "direct".

  "onednn" replaces the XLA form in ``ONEDNN_FORMS`` (ungrouped), for ``narrow``
  (bfloat16) inputs in ``ONEDNN_NARROW_FORMS``, and some depthwise and 1 x 1 kernels
  (``_onednn_beats``), where ``use_onednn`` (default: :func:`medjax.kernels.onednn.usable`,
  and for ``narrow`` inputs :func:`medjax.kernels.onednn.bfloat16_kernels`).
  The XLA forms, chosen as follows, run everywhere else.

  With the reference ops, always "direct". Otherwise depthwise kernels (one input channel
  per group, as many outputs as groups) go by :func:`depthwise_conv` at any stride; other
  grouped kernels with at most ``SPLIT_MAX_GROUPS`` groups are split into one ungrouped
  convolution per group (XLA:CPU's grouped convolution and its gradients run several times
  slower than the groups done apart);
  stride-1 kernels with at least ``FFT_MIN_TAPS`` taps by FFT if they have more than one
  input channel (with one, the transforms cost more than they save), else directly;
  stride-1 1 x 1 kernels as one ``x @ W`` over the channel axis; one-channel kernels of at
  most ``SINGLE_CHANNEL_MAX_TAPS`` taps by :func:`single_channel_conv`; other small
  stride-1 kernels by :func:`tap_grad_conv` when either channel count is at most
  ``TAP_GRAD_MAX_CHANNELS`` and the CPU's vectors hold ``vector_floats`` >= 16 floats
  (AVX-512; default: this host's, :mod:`medjax.kernels.isa`); with 8 (AVX2) directly, on
  input channels zero-padded to a multiple of ``PAD_CHANNELS_MULTIPLE`` if there are at
  least ``PAD_CHANNELS_MIN`` ("padded_channels"); directly on other CPUs; wider ones by
  :func:`patches_conv` on maps of at most ``PATCHES_MAX_PIXELS`` pixels (``x_hw`` given),
  or there by :func:`winograd_conv` if the kernel is 3 x 3 and the input float32, else
  directly; with oneDNN, wide float32 3 x 3 ones on ``WINOGRAD_MAP_PIXELS`` maps by Winograd
  too. Other strided or grouped convolutions stay direct: a full-resolution FFT or per-tap
  products would compute outputs the stride discards.
  """
  if not choice.fast(kernels):
    return "direct"
  algorithm = _xla_algorithm(kernel_shape, strides, feature_group_count, x_hw, vector_floats)
  to_onednn = _onednn_beats(algorithm, kernel_shape, strides, feature_group_count, x_hw, narrow)
  if to_onednn and use_onednn is None:
    use_onednn = onednn.usable() and (not narrow or onednn.bfloat16_kernels())
  to_onednn = to_onednn and use_onednn
  if _winograd_replaces(algorithm, kernel_shape, strides, x_hw, narrow, to_onednn):
    return "winograd"
  return "onednn" if to_onednn else algorithm


def _winograd_replaces(algorithm, kernel_shape, strides, x_hw, narrow, onednn_products) -> bool:
  """Whether :func:`winograd_conv` replaces ``algorithm`` for a float32 3 x 3 kernel: the
  patches everywhere, oneDNN's direct convolution of wide layers on ``WINOGRAD_MAP_PIXELS``
  maps (its matmul then does the products)."""
  if narrow or tuple(kernel_shape[:2]) != (3, 3):
    return False
  if algorithm == "patches":
    return True
  return (onednn_products and algorithm == "direct" and tuple(strides) == (1, 1)
          and min(kernel_shape[2:]) >= WINOGRAD_MIN_CHANNELS and x_hw is not None
          and WINOGRAD_MAP_PIXELS[0] <= x_hw[0] * x_hw[1] <= WINOGRAD_MAP_PIXELS[1])


def _onednn_beats(algorithm, kernel_shape, strides, feature_group_count, x_hw, narrow):
  """Whether oneDNN's convolution was measured faster than the XLA form ``algorithm``."""
  if algorithm == "depthwise":
    return True
  if feature_group_count != 1:
    return False
  if algorithm == "pointwise":
    return narrow and x_hw is not None and x_hw[0] * x_hw[1] > PATCHES_MAX_PIXELS
  return algorithm in (ONEDNN_NARROW_FORMS if narrow else ONEDNN_FORMS)


def _is_depthwise(kernel_shape, feature_group_count) -> bool:
  """One input channel per group and one output per group (EfficientNet's kernels)."""
  return (feature_group_count != 1 and kernel_shape[2] == 1
          and kernel_shape[3] == feature_group_count)


def _xla_algorithm(kernel_shape, strides, feature_group_count, x_hw, vector_floats):
  kh, kw, c, o = kernel_shape
  if feature_group_count != 1:
    if _is_depthwise(kernel_shape, feature_group_count):
      return "depthwise"
    return "split_groups" if feature_group_count <= SPLIT_MAX_GROUPS else "direct"
  if tuple(strides) != (1, 1):
    return "direct"
  if kh * kw >= FFT_MIN_TAPS:
    return "fft" if c > 1 else "direct"
  if kh == kw == 1:
    return "pointwise"
  if c == 1 and kh * kw <= SINGLE_CHANNEL_MAX_TAPS:
    return "single_channel"
  if min(c, o) <= TAP_GRAD_MAX_CHANNELS:
    lanes = isa.vector_floats() if vector_floats is None else vector_floats
    if lanes >= 16:
      return "tap_grad"
    padded = (lanes == PAD_CHANNELS_MULTIPLE and c >= PAD_CHANNELS_MIN
              and c % PAD_CHANNELS_MULTIPLE != 0)
    return "padded_channels" if padded else "direct"
  if x_hw is not None and x_hw[0] * x_hw[1] <= PATCHES_MAX_PIXELS:
    return "patches"
  return "direct"


def onednn_xla_grads(kernel_shape, strides, feature_group_count: int = 1,
                     narrow: bool = False) -> tuple[str, ...]:
  """The gradients of an "onednn" convolution that XLA's form computes instead (see
  ``ONEDNN_DEPTHWISE_GRAD_MAX_TAPS``): none, except for depthwise kernels."""
  if not _is_depthwise(kernel_shape, feature_group_count):
    return ()
  taps, strided = kernel_shape[0] * kernel_shape[1], tuple(strides) != (1, 1)
  grads = () if strided and taps > ONEDNN_DEPTHWISE_GRAD_MAX_TAPS and not narrow else (
      "input_grad",)
  return grads + (() if taps <= ONEDNN_DEPTHWISE_GRAD_MAX_TAPS else ("kernel_grad",))


def _xla_conv(x, kernel, strides, padding, feature_group_count, kernels):
  """:func:`conv` by XLA's form, for the gradients oneDNN's loses on."""
  with onednn.disabled():
    return conv(x, kernel, strides, padding, feature_group_count, kernels=kernels)


def conv(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding="SAME",
         feature_group_count: int = 1, *, kernels: str = choice.XLA_CPU,
         bias: jax.Array | None = None, relu: bool = False) -> jax.Array:
  """2-D NHWC/HWIO convolution by :func:`conv_algorithm`'s choice for ``kernels``, plus
  ``bias`` (None: none) and then ReLU where ``relu``: both inside oneDNN's call where it
  convolves the layer with no gradient of XLA's (one pass over the output instead of
  three), else as XLA ops after the convolution."""
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
  algorithm = conv_algorithm(kernel.shape, strides, feature_group_count, kernels=kernels,
                             x_hw=x.shape[1:3], narrow=is_narrow(x.dtype),
                             use_onednn=None if x.dtype in onednn.DTYPES else False)
  if algorithm == "onednn":
    xla_grads = onednn_xla_grads(kernel.shape, strides, feature_group_count,
                                 is_narrow(x.dtype))
    pads = explicit_pads(x.shape[1:3], kernel.shape[:2], padding, strides)
    if bias is not None and not xla_grads:
      return onednn.conv_bias(x, kernel, bias, strides, pads, feature_group_count, relu)
    xla_form = functools.partial(_xla_conv, strides=strides, padding=padding,
                                 feature_group_count=feature_group_count, kernels=kernels)
    y = onednn.conv(x, kernel, strides, pads, feature_group_count,
                    xla_form if xla_grads else None, xla_grads)
  else:
    y = _xla_form(algorithm, x, kernel, strides, padding, feature_group_count, kernels)
  y = y if bias is None else add_bias(y, bias)
  return jax.nn.relu(y) if relu else y


def _xla_form(algorithm, x, kernel, strides, padding, feature_group_count, kernels):
  """The convolution by one of :func:`conv_algorithm`'s XLA forms."""
  if algorithm in ("fft", "direct", "tap_grad", "padded_channels") and is_narrow(x.dtype):
    # XLA:CPU convolves bfloat16 more slowly than float32: only "pointwise" and "patches"
    # reach its bfloat16 matrix kernels, the others run in float32.
    return conv(x.astype(jnp.float32), kernel.astype(jnp.float32), strides, padding,
                feature_group_count, kernels=kernels).astype(x.dtype)
  if algorithm == "fft":
    return fft_conv(x, kernel, padding)
  if algorithm == "depthwise":
    return depthwise_conv(x, kernel, strides, padding)
  if algorithm == "direct":
    return direct(x, kernel, strides, padding, feature_group_count)
  if algorithm == "padded_channels":  # Zeros: the same sums; XLA fuses the pad upstream.
    extra = (0, -x.shape[-1] % PAD_CHANNELS_MULTIPLE)
    return direct(jnp.pad(x, ((0, 0),) * 3 + (extra,)),
                  jnp.pad(kernel, ((0, 0), (0, 0), extra, (0, 0))), strides, padding)
  if algorithm == "split_groups":
    pieces = zip(jnp.split(x, feature_group_count, axis=-1),
                 jnp.split(kernel, feature_group_count, axis=-1))
    return jnp.concatenate([conv(xg, kg, strides, padding, kernels=kernels)
                            for xg, kg in pieces], axis=-1)
  pads = explicit_pads(x.shape[1:3], kernel.shape[:2], padding)
  if algorithm == "pointwise":
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    return mm.matmul(x.reshape(-1, x.shape[-1]), kernel[0, 0]).reshape(*x.shape[:3], -1)
  if algorithm == "winograd" and max(max(pair) for pair in pads) <= WINOGRAD_MAX_PAD:
    return winograd_conv(x, kernel, pads)
  if algorithm in ("patches", "winograd"):
    return patches_conv(x, kernel, pads)
  if algorithm == "single_channel":
    return single_channel_conv(x, kernel, pads)
  return tap_grad_conv(x, kernel, pads)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """``y + bias`` over the last axis, whose bias gradient is summed in float32 directly:
  for a bfloat16 ``y``, XLA:CPU would otherwise write the output gradient out in float32
  and sum it by a tree of reduce-windows."""
  return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
  return add_bias(y, bias), bias


def _add_bias_bwd(bias, g):
  axes = tuple(range(g.ndim - 1))
  return g, jnp.sum(g, axis=axes, dtype=accumulation_dtype(g.dtype)).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Module):
  """``nn.Conv`` (2-D, NHWC) routed through :func:`conv`, for every medjax model.

  Parameters are named and shaped as ``nn.Conv``'s (``kernel`` HWIO with ``C / groups``
  input channels, ``bias``), so checkpoints and weight importers do not depend on
  ``kernels``. ``activation`` is applied after the bias; ``jax.nn.relu`` (``nn.relu``)
  goes into the convolution's own call where :func:`conv` can.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] | int = (1, 1)
  padding: str | int | tuple = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  kernels: str = choice.XLA_CPU
  activation: Callable[[jax.Array], jax.Array] | None = None

  @nn.compact
  def __call__(self, x):
    groups = self.feature_group_count
    if x.shape[-1] % groups:
      raise ValueError(f"{self.name}: {x.shape[-1]} input channels do not split into "
                       f"feature_group_count={groups} groups")
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1] // groups, self.features))
    bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
    relu = self.activation is jax.nn.relu
    y = conv(x, kernel, self.strides, self.padding, groups, kernels=self.kernels, bias=bias,
             relu=relu)
    return y if relu or self.activation is None else self.activation(y)
