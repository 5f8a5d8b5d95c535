"""Matrix products in the layouts XLA:CPU runs fastest, bfloat16 included.

XLA:CPU (jaxlib 0.10) hands a bfloat16 x bfloat16 product with a float32 result to
YNNPACK's bfloat16 kernels, about twice its float32 rate on CPUs with AVX512-BF16, but only
when the product is plain ``(M, K) @ (K, N)`` or ``(M, K) @ (N, K)^T``: a bfloat16 result,
or a left operand contracted over its first axis (as every weight gradient is), is
converted to float32 first and runs at the float32 rate. :func:`matmul` keeps all three
products of a layer (value, input gradient, weight gradient) in the fast forms and
accumulates in float32; in float32 it is the plain product. A float32 weight gradient with
a wide result runs faster with its left operand written out transposed as well (:func:`tn`)
on AVX2 CPUs; with AVX-512 the single contraction is as fast or faster.

Where oneDNN has bfloat16 kernels (AVX512-BF16 or AMX) and may run in the program being
traced (:func:`medjax.kernels.onednn.usable`), bfloat16 products go to oneDNN's matmul
instead, transposed operands read in place: oneDNN's kernels are as fast as YNNPACK's or
faster on AVX512-BF16 and use AMX's tiles, where XLA:CPU's bfloat16 products run at its
float32 rate. docs/performance.md has the measurements.
"""
import jax
import jax.numpy as jnp

from medjax.kernels import isa, onednn
from medjax.kernels.precision import accumulation_dtype, is_narrow


def _on_onednn(dtype) -> bool:
  """Whether a product of ``dtype`` operands traced now goes to oneDNN's matmul."""
  return dtype == jnp.bfloat16 and onednn.usable() and onednn.bfloat16_kernels()


def _nn(a, b):
  if _on_onednn(a.dtype):
    return onednn.batched_matmul(a[None], b[None])[0]
  return jnp.dot(a, b, preferred_element_type=accumulation_dtype(a.dtype))


def nt(a, b):
  """``a @ b.T`` as one contraction of both operands' last axes."""
  if _on_onednn(a.dtype):
    return onednn.batched_matmul(a[None], b[None], transpose_b=True)[0]
  return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())),
                             preferred_element_type=accumulation_dtype(a.dtype))


def transposed(a: jax.Array) -> jax.Array:
  """``a.T`` written out, in a form XLA does not fold into the consuming product's
  dimension numbers (which would make it a slow first-axis contraction in bfloat16)."""
  rows, cols = a.shape
  return jnp.transpose(a.reshape(rows, cols, 1), (1, 0, 2)).reshape(cols, rows)


# float32 ``a.T @ b`` ((m, k)^T (m, n)) with ``a`` written out transposed first, on an AVX2
# CPU, when its result is wide: m >= MIN_CONTRACTED, n >= MIN_RESULT_COLUMNS and
# MIN_RESULT_ROWS <= k <= n (docs/performance.md, "Wide weight gradients transposed first").
# Elsewhere, and on every shape with AVX-512, XLA:CPU's first-axis contraction is as fast or
# faster.
MIN_CONTRACTED, MIN_RESULT_COLUMNS, MIN_RESULT_ROWS = 1024, 2048, 128


def _transpose_first(a: jax.Array, b: jax.Array, vector_floats: int | None = None) -> bool:
  """Whether float32 ``a.T @ b`` runs faster as ``transposed(a) @ b`` than as one
  first-axis contraction on a CPU of ``vector_floats`` float32 lanes (default: this host's):
  true with AVX2 for the CAE's ``(18432, 2304)^T (18432, 4096)`` weight gradients, false for
  fully connected and pointwise ones and with AVX-512."""
  lanes = isa.vector_floats() if vector_floats is None else vector_floats
  m, k = a.shape
  n = b.shape[1]
  return (lanes == 8 and m >= MIN_CONTRACTED and n >= MIN_RESULT_COLUMNS
          and MIN_RESULT_ROWS <= k <= n)


def tn(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a.T @ b`` in the accumulation dtype (float32 for bfloat16), the form of every weight
  gradient."""
  if _on_onednn(a.dtype):
    return onednn.batched_matmul(a[None], b[None], transpose_a=True)[0]
  if not is_narrow(a.dtype) and not _transpose_first(a, b):
    return jax.lax.dot_general(a, b, (((0,), (0,)), ((), ())))
  return _nn(transposed(a), b)


@jax.custom_vjp
def _narrow(a, b):
  return _nn(a, b).astype(a.dtype)


def _narrow_fwd(a, b):
  return _narrow(a, b), (a, b)


def _narrow_bwd(residuals, g):
  a, b = residuals
  g = g.astype(a.dtype)
  return nt(g, b).astype(a.dtype), tn(a, g).astype(b.dtype)


_narrow.defvjp(_narrow_fwd, _narrow_bwd)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """``a @ b`` for 2-D ``a`` and ``b`` of one float dtype, accumulated in float32 and
  returned in that dtype, with its gradients in the same fast forms."""
  if a.dtype != b.dtype:
    raise ValueError(f"matmul of {a.dtype} and {b.dtype}: cast both to the compute dtype")
  if not is_narrow(a.dtype):
    return a @ b
  return _narrow(a, b)
