"""medjax's XLA:CPU specifics behind one door: every model convolves, pools and compiles
through here.

XLA:CPU runs some of the papers' layers far slower than equivalent forms built from ops it
does run well (large kernels by FFT, few-channel kernel gradients by matmuls, depthwise
and 1 x 1 kernels as fused elementwise ops and matmuls, max-pool gradients without
select-and-scatter) and compiles convolutions better with one option set. Those fixes live
in this package, so models stay plain Flax (the host memory policy that stops XLA:CPU's
temporaries page-faulting is process set-up, :mod:`medjax.host_memory`):

* :class:`Conv`, :class:`Dense`, :func:`max_pool`, :func:`max_pool_ceil`, :func:`avg_pool`,
  :func:`adaptive_avg_pool` take ``kernels``: ``"xla_cpu"`` (the fast forms, chosen per
  op shape) or ``"reference"`` (``lax.conv_general_dilated`` and Flax's pools as written).
  Both compute the same function up to float32 round-off. Models carry the choice as an
  attribute (``config.model.kernels``); :func:`resolve` turns ``"auto"`` into one of the
  two for the default backend where the model is built, never at trace time.
* :func:`jit` is ``jax.jit`` with the XLA:CPU compile options; :func:`run_steps` runs
  several train steps in one compiled call; :func:`global_norm` is optax's as a product.
* :func:`image_chunk` is how many images a CPU forward pass takes at a time.
* :mod:`medjax.kernels.precision` is the mixed-precision policy (``config.compute_dtype``).
* :mod:`medjax.kernels.onednn` runs most convolutions on oneDNN's kernels (AVX512-BF16 and
  AMX included) through an XLA custom call it compiles on first use, where it can.

Only JAX, Flax and the standard library are imported here (and the custom call's C++
source), so models may depend on it.
"""
from medjax.kernels.choice import AUTO, CHOICES, REFERENCE, XLA_CPU, fast, resolve
from medjax.kernels.compiler import jit, options, run_steps
from medjax.kernels.convolution import Conv, conv, conv_algorithm
from medjax.kernels.dense import Dense
from medjax.kernels import precision
from medjax.kernels.pool import adaptive_avg_pool, avg_pool, max_pool, max_pool_ceil
from medjax.kernels.reductions import global_norm
from medjax.kernels.windows import batch_chunk, image_chunk

__all__ = ["AUTO", "CHOICES", "REFERENCE", "XLA_CPU", "fast", "resolve", "jit", "options",
           "run_steps", "Conv", "conv", "conv_algorithm", "Dense", "adaptive_avg_pool", "avg_pool",
           "max_pool", "max_pool_ceil", "global_norm", "batch_chunk", "image_chunk", "precision"]
