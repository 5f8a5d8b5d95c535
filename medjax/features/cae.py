"""Zero-bias convolutional auto-encoder on frozen backbone features (system 3, Ahn et al.).

The input is a backbone feature map (AlexNet's last conv stage, ``6 x 6 x 256``, NHWC, as
the paper uses). Architecture (paper Sec. 2.2 and Table 1):

* encoder (eq. 1): ``h = relu(x * W + b_enc)``, 3x3 kernel, stride 1, pad 1, ``num_filters``
  maps (4096 in the paper), then 2x2 max-pooling with stride 2 (rows/columns left over by an
  odd size are dropped, like a VALID pool);
* decoder (eq. 2): ``y = relu(sum_k z^k * W~^k + b_dec)`` where ``W~`` is the encoder kernel
  rotated by 180 degrees with its input/output channels swapped (``decoder_kernel``), i.e.
  the decoder convolution is the exact adjoint (transposed convolution) of the encoder's.
  The output ReLU is eq. 2's sigma; it suits the non-negative post-ReLU backbone features.
* unpooling: following Masci et al. (2011), the paper's reference [18] for this CAE, the
  max-pooled code is unpooled by putting each maximum back at its arg-max position and zeros
  elsewhere (``max_unpool``), so the decoder reconstructs from a sparse map (first position
  wins a tie).
* loss (eq. 3): ``0.5 * ||x - y||^2`` summed over all elements of an example, averaged over
  the batch (Caffe's EuclideanLoss convention) so that the learning rate (1e-5 in the paper)
  does not scale with the batch size; eq. 3's plain sum is ``loss * batch_size``. Which one
  the paper's 1e-5 was meant for is unknown, and with the sum each step is batch-size times
  larger, so training takes ``reduction="mean"`` or ``"sum"`` (config ``cae.loss_reduction``).

Zero-bias activation (Sec. 2.3, after Konda et al. 2014): the hidden biases are trained with
the rest of the auto-encoder (they take the large negative values that act as sparsity
thresholds), but at *encoding time*, when the CAE is used as a feature extractor, they are
fixed to zero: the features are ``maxpool(relu(x * W))``. ``encode`` does that by default;
``zero_bias=False`` gives the training-time (biased) encoding that ``reconstruct`` and
``loss`` use. ``reconstruct(..., zero_bias=True)`` zeroes the decoder bias as well, for
completeness with the paper's "convolutional and deconvolutional layers" wording.

Params are a plain dict pytree ``{"w": (3, 3, C, F), "b_enc": (F,), "b_dec": (C,)}`` so any
optax optimiser and checkpointer applies; ``jax.grad(loss)`` is all a trainer needs and
``train_step`` packages one SGD step and ``train_steps`` jits several to a call.
"""
import functools

import jax
import jax.numpy as jnp
import optax

from medjax import kernels
from medjax.kernels import precision


@functools.partial(kernels.jit, once=True,
                   static_argnames=("in_channels", "num_filters", "kernel_size"))
def init(key: jax.Array, in_channels: int, num_filters: int = 4096, *,
         kernel_size: int = 3) -> dict:
  """Glorot-uniform tied kernel, zero biases; compiled as every initialisation is
  (``kernels.jit(..., once=True)``)."""
  fan_in = kernel_size * kernel_size * in_channels
  fan_out = kernel_size * kernel_size * num_filters
  limit = (6.0 / (fan_in + fan_out)) ** 0.5
  w = jax.random.uniform(key, (kernel_size, kernel_size, in_channels, num_filters),
                         jnp.float32, -limit, limit)
  return {"w": w, "b_enc": jnp.zeros((num_filters,), jnp.float32),
          "b_dec": jnp.zeros((in_channels,), jnp.float32)}


def _conv(x, kernel):
  """Stride-1 'same' convolution through medjax's XLA:CPU kernels (on the paper's 6 x 6
  maps at 256 <-> 4096 channels, Winograd's F(3 x 3, 3 x 3) in float32, oneDNN's or one
  matrix product over patches in bfloat16)."""
  pad = kernel.shape[0] // 2
  return kernels.conv(x, kernel, padding=((pad, pad), (pad, pad)), kernels=kernels.XLA_CPU)


def decoder_kernel(params: dict) -> jax.Array:
  """The tied decoder kernel ``W~``: spatially flipped, in/out channels swapped ``(3, 3, F, C)``."""
  return jnp.flip(params["w"], axis=(0, 1)).swapaxes(2, 3)


def hidden(params: dict, x: jax.Array, *, zero_bias: bool = True) -> jax.Array:
  """Pre-pooling feature maps ``relu(x * W [+ b_enc])`` ``(B, H, W, F)``."""
  pre = _conv(x, params["w"])
  if not zero_bias:
    pre = pre + params["b_enc"]
  return jax.nn.relu(pre)


def _windows(h):
  b, height, width, f = h.shape
  h = h[:, :height // 2 * 2, :width // 2 * 2]
  h = h.reshape(b, height // 2, 2, width // 2, 2, f)
  return h.transpose(0, 1, 3, 5, 2, 4).reshape(b, height // 2, width // 2, f, 4)


def max_pool(h: jax.Array) -> jax.Array:
  """2x2 max-pooling, stride 2: ``(B, H, W, F) -> (B, H // 2, W // 2, F)``."""
  return jnp.max(_windows(h), axis=-1)


def _argmax_mask(h: jax.Array) -> jax.Array:
  """1 at each 2x2 window's arg-max (first position wins a tie), 0 elsewhere and on the odd
  last row and column, which no window covers: ``h``'s shape and dtype."""
  b, height, width, f = h.shape
  keep = jax.nn.one_hot(jnp.argmax(_windows(h), axis=-1), 4, dtype=h.dtype)
  keep = keep.reshape(b, height // 2, width // 2, f, 2, 2)
  keep = keep.transpose(0, 1, 4, 2, 5, 3).reshape(b, height // 2 * 2, width // 2 * 2, f)
  return jnp.pad(keep, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))


def max_unpool(h: jax.Array) -> jax.Array:
  """Max-pools then unpools ``h`` in place: window maxima kept at their arg-max, zeros elsewhere."""
  return h * _argmax_mask(h)


def encode(params: dict, x: jax.Array, *, zero_bias: bool = True) -> jax.Array:
  """Pooled codes ``(B, H // 2, W // 2, F)``; zero-bias (encoding-time) by default."""
  return max_pool(hidden(params, x, zero_bias=zero_bias))


def decode(params: dict, maps: jax.Array, *, zero_bias: bool = False) -> jax.Array:
  """Reconstruction ``relu(maps * W~ [+ b_dec])`` from full-resolution (unpooled) maps."""
  pre = _conv(maps, decoder_kernel(params))
  if not zero_bias:
    pre = pre + params["b_dec"]
  return jax.nn.relu(pre)


def reconstruct(params: dict, x: jax.Array, *, zero_bias: bool = False) -> jax.Array:
  """Training-time forward pass: encode, max-pool, unpool at the arg-max, decode."""
  return decode(params, max_unpool(hidden(params, x, zero_bias=zero_bias)), zero_bias=zero_bias)


@jax.custom_vjp
def loss(params: dict, x: jax.Array) -> jax.Array:
  """Eq. 3 per example, averaged over the batch: ``0.5 * sum((x - y)^2) / B``.

  Its gradient (:func:`_loss_bwd`) is autodiff's, arranged for XLA:CPU: autodiff's own
  spends a large share of a step at the paper's sizes in two passes that this form does
  not have (see :func:`_loss_bwd`)."""
  return _loss_fwd(params, x)[0]


def _column_sums(a: jax.Array) -> jax.Array:
  """Sum over every axis but the last, in float32. In float32, a matrix-vector product:
  XLA:CPU reduces a tall array over its rows as a tree of reduce-windows striding across
  rows, far slower than multiplying it by a ones vector; a narrower ``a`` is summed in
  float32 directly (the product would run at the narrow type's slow matrix-vector rate)."""
  rows = a.reshape(-1, a.shape[-1])
  if precision.is_narrow(a.dtype):
    return jnp.sum(rows, axis=0, dtype=precision.accumulation_dtype(a.dtype))
  return jnp.ones((rows.shape[0],), a.dtype) @ rows


def _conv_vjp(x: jax.Array, kernel: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Gradients of ``sum(g * _conv(x, kernel))`` with respect to ``x`` and ``kernel``, by
  ``kernels.conv``'s rules; under jit, the one not used is compiled away."""
  return jax.vjp(_conv, x, kernel)[1](g)


def _loss_fwd(params, x):
  """:func:`reconstruct`'s steps, keeping what the gradient needs: the residual, where the
  output ReLU passes, the unpooled maps, and where the hidden gradient can be non-zero (an
  arg-max with a positive activation)."""
  h = hidden(params, x, zero_bias=False)
  keep = _argmax_mask(h)
  maps = h * keep
  y = decode(params, maps)
  residual = y - x
  wide = residual.astype(precision.accumulation_dtype(residual.dtype))
  value = 0.5 * jnp.sum(wide * wide) / x.shape[0]
  return value, (params["w"], residual, y > 0, x, maps, (keep > 0) & (h > 0))


def _loss_bwd(residuals, ct):
  """The decoder kernel ``W~`` is ``W`` flipped with its channel axes swapped, so its
  gradient, brought back to ``W``'s layout, is the kernel gradient of a convolution of the
  output gradient (256 channels) against the unpooled maps (4096): both kernel-gradient
  terms then have the 256-channel operand on the input side, where autodiff would
  transpose the 4096-channel maps to put the batch innermost. Bias gradients are
  :func:`_column_sums` rather than autodiff's row reductions. The input's gradient
  (through the reconstruction and as the target) is exact; a train step, which does not
  use it, compiles it away."""
  w, residual, y_passes, x, maps, h_passes = residuals
  g_residual = residual * (ct / x.shape[0]).astype(residual.dtype)
  g_y = jnp.where(y_passes, g_residual, 0.0)
  g_pre = jnp.where(h_passes, _conv(g_y, w), 0.0)
  dx, dw_encoder = _conv_vjp(x, w, g_pre)
  _, dw_decoder = _conv_vjp(g_y, w, maps)
  grads = {"w": dw_encoder + dw_decoder,
           "b_enc": _column_sums(g_pre).astype(w.dtype),
           "b_dec": _column_sums(g_y).astype(w.dtype)}
  return grads, dx - g_residual


loss.defvjp(_loss_fwd, _loss_bwd)


@functools.partial(kernels.jit, static_argnames=("compute_dtype",))
def features(params: dict, x: jax.Array, compute_dtype: str = "float32") -> jax.Array:
  """The SVM input: zero-bias pooled codes flattened to ``(B, H // 2 * W // 2 * F)``,
  float32, computed in ``compute_dtype`` (:mod:`medjax.kernels.precision`)."""
  dtype = precision.compute_dtype(compute_dtype)
  codes = encode(precision.cast(params, dtype), x.astype(dtype), zero_bias=True)
  return codes.reshape(codes.shape[0], -1).astype(jnp.float32)


REDUCTIONS = ("mean", "sum")


def train_step(params: dict, opt_state: optax.OptState, batch: jax.Array,
               optimizer: optax.GradientTransformation, reduction: str = "mean",
               compute_dtype: str = "float32"):
  """One optimiser step on ``loss``; returns ``(params, opt_state, loss_value)``.

  ``compute_dtype`` runs the auto-encoder in that float (:mod:`medjax.kernels.precision`):
  parameters, their gradients, the optimiser and the loss value stay float32.

  ``reduction="sum"`` steps on eq. 3 summed over the batch (``loss * batch_size``, and the
  value returned is that sum).

  The batch loss is passed to the optimiser as ``value``, so the paper's anneal-by-10 on a
  plateau is ``optax.chain(optax.sgd(1e-5), optax.contrib.reduce_on_plateau(factor=0.1,
  accumulation_size=steps_per_epoch))``. :func:`train_steps` jits it.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"CAE loss reduction {reduction!r}; expected one of {REDUCTIONS}")
  dtype = precision.compute_dtype(compute_dtype)
  value, grads = jax.value_and_grad(
      lambda p, x: loss(precision.cast(p, dtype), x.astype(dtype)))(params, batch)
  if reduction == "sum":
    value, grads = jax.tree.map(lambda a: a * batch.shape[0], (value, grads))
  updates, opt_state = optax.with_extra_args_support(optimizer).update(
      grads, opt_state, params, value=value)
  return optax.apply_updates(params, updates), opt_state, value


@functools.partial(kernels.jit,
                   static_argnames=("optimizer", "reduction", "compute_dtype"),
                   donate_argnums=(0, 1))
def train_steps(params: dict, opt_state: optax.OptState, batches: tuple,
                optimizer: optax.GradientTransformation, reduction: str = "mean",
                compute_dtype: str = "float32"):
  """:func:`train_step` on each of ``batches`` in turn, in one compiled call
  (:func:`medjax.kernels.run_steps` says why); returns ``(params, opt_state, [loss of each
  step])``. ``optimizer`` is a static argument: build it once and reuse it, or every new
  instance recompiles.
  """
  def step(carry, batch):
    params, opt_state, value = train_step(*carry, batch, optimizer, reduction, compute_dtype)
    return (params, opt_state), value
  (params, opt_state), values = kernels.run_steps(step, (params, opt_state), batches)
  return params, opt_state, values


def loss_converged(history: list[float], rtol: float, patience: int) -> bool:
  """True once the best of the last ``patience`` epoch losses is less than ``rtol``
  (relative) below the loss before them; ``rtol`` 0 never converges."""
  if not rtol or len(history) <= patience:
    return False
  before = history[-patience - 1]
  return before - min(history[-patience:]) < rtol * abs(before)
