"""Stride-1 3 x 3 convolution by Winograd's minimal filtering F(m x m, 3 x 3).

Each ``m x m`` tile of output comes from an ``(m + 2)^2`` tile of input with ``(m + 2)^2``
products per channel pair instead of ``9 m^2``: on the CAE's 6 x 6 maps F(3 x 3) does 100
products for 36 outputs where the direct form does 324. The products are one batched
matrix product per tile position (oneDNN's matmul where :mod:`medjax.kernels.onednn` is
built); the transforms around them are sums of scaled slices, which XLA fuses, so the form
pays where the products dominate: wide layers (docs/performance.md).
:func:`medjax.kernels.conv` chooses it (``conv_algorithm`` "winograd").

The transforms are Toom-Cook's at the points 0, 1, -1, 1/2 (and -1/2 for m = 4) and
infinity, built in exact rational arithmetic and applied in float32, so a result differs
from the direct convolution's by float32 round-off a few times larger; the tests bound it
against a float64 reference. A bfloat16 input gives bfloat16 operands to the products, with
1.4x (F(2 x 2)) to 16x (F(4 x 4)) the direct form's round-off and no gain in speed over
oneDNN's bfloat16 convolution, so :func:`medjax.kernels.conv` sends only float32 here.
"""
import functools
from fractions import Fraction

import jax
import jax.numpy as jnp

from medjax.kernels import onednn
from medjax.kernels.precision import accumulation_dtype
from medjax.kernels.windows import batch_chunk, sum_over_batch_chunks

_POINTS = {2: (0.0, 1.0, -1.0), 3: (0.0, 1.0, -1.0, 0.5), 4: (0.0, 1.0, -1.0, 0.5, -0.5)}
TILES = tuple(_POINTS)
# Padding on either side that the input gradient (a convolution padded by 2 - pad) allows.
MAX_PAD = 2
# Floats of input per batch chunk of the tile transforms (4 of the CAE's 6 x 6 x 4,096 maps
# measured fastest).
TRANSFORM_CHUNK_FLOATS = 2 ** 20
# Tile rows per batch chunk of the products (128 of the CAE's 6 x 6 maps): products that
# large run at the full rate, and a chunk's (n * n, rows, O) products are a fraction of the
# whole batch's, which were 0.8 GB per CAE layer and page-faulted in anew on every call.
PRODUCT_CHUNK_TILES = 512


def _inverse(matrix):
  """The inverse of a square matrix of Fractions, by Gauss-Jordan elimination (exact)."""
  n = len(matrix)
  rows = [list(row) + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
  for col in range(n):
    pivot = next(r for r in range(col, n) if rows[r][col] != 0)
    rows[col], rows[pivot] = rows[pivot], rows[col]
    rows[col] = [v / rows[col][col] for v in rows[col]]
    for r in range(n):
      if r != col and rows[r][col] != 0:
        rows[r] = [v - rows[r][col] * w for v, w in zip(rows[r], rows[col])]
  return [row[n:] for row in rows]


def _transpose(matrix):
  return [list(column) for column in zip(*matrix)]


@functools.lru_cache(maxsize=None)
def matrices(m: int) -> tuple[tuple[tuple[float, ...], ...], ...]:
  """``(A^T, G, B^T)`` of F(m, 3) as nested tuples: ``y = A^T [(G g) * (B^T d)]`` is the
  correlation ``y_i = sum_k d_{i + k} g_k`` of ``m + 2`` inputs with 3 taps.

  Toom-Cook: with ``V_k`` the Vandermonde matrix of the points (and infinity) for
  polynomials of ``k`` coefficients, polynomial multiplication is
  ``c = V_n^-1 [(V_3 g) * (V_m a)]``; correlation is its transpose in ``a``. Built in
  exact rational arithmetic, then rounded once to floats."""
  points, n = [Fraction(p) for p in _POINTS[m]], m + 2

  def vandermonde(columns):
    return [[p ** k for k in range(columns)] for p in points] + [
        [Fraction(0)] * (columns - 1) + [Fraction(1)]]
  exact = (_transpose(vandermonde(m)), vandermonde(3), _transpose(_inverse(vandermonde(n))))
  return tuple(tuple(tuple(float(v) for v in row) for row in matrix) for matrix in exact)


def _kron(a, b):
  """The Kronecker product of two nested-tuple matrices: the 2-D transform of a tile
  flattened row-major."""
  return [[x * y for x in row_a for y in row_b] for row_a in a for row_b in b]


def tile_size(out_hw) -> int:
  """The ``m`` whose tiles cover ``out_hw`` with the fewest products (the smallest ``m``
  on a tie, for the smallest round-off): 3 on 6 x 6 maps, 4 on large ones."""
  def products(m):
    return -(-out_hw[0] // m) * -(-out_hw[1] // m) * (m + 2) ** 2
  return min(TILES, key=lambda m: (products(m), m))


def _combine(matrix, terms):
  """``[sum_j matrix[i, j] * terms[j] for i]``, skipping zeros and multiplying by +-1 as
  negation, so that XLA fuses each row into one pass."""
  rows = []
  for row in matrix:
    total = None
    for c, term in zip(row, terms):
      if c == 0:
        continue
      scaled = term if c == 1 else -term if c == -1 else term * jnp.asarray(c, term.dtype)
      total = scaled if total is None else total + scaled
    rows.append(jnp.zeros_like(terms[0]) if total is None else total)
  return rows


def _geometry(x_hw, pads, m=None):
  out_h = x_hw[0] + sum(pads[0]) - 2
  out_w = x_hw[1] + sum(pads[1]) - 2
  m = m or tile_size((out_h, out_w))
  return m, -(-out_h // m), -(-out_w // m), out_h, out_w


def _over_batch_chunks(fn, a: jax.Array, chunk: int, out_shape, axis: int) -> jax.Array:
  """``fn`` of consecutive batch chunks of ``a`` (``chunk`` divides the batch), each
  result written in turn along ``axis`` of one ``out_shape`` array by a loop, so that only
  one chunk's temporaries exist at a time."""
  batch = a.shape[0]
  if chunk == batch:
    return fn(a)
  out = jnp.zeros(out_shape, a.dtype)
  step = out_shape[axis] // (batch // chunk)

  def add_chunk(j, out):
    part = fn(jax.lax.dynamic_slice_in_dim(a, j * chunk, chunk))
    return jax.lax.dynamic_update_slice_in_dim(out, part, j * step, axis=axis)
  return jax.lax.fori_loop(0, batch // chunk, add_chunk, out)


def _tiles_by_chunks(tiles, a: jax.Array, n: int, tiles_per_example: int) -> jax.Array:
  """``tiles(chunk)`` ``(n * n, chunk * tiles_per_example, C)`` over batch chunks of
  ``TRANSFORM_CHUNK_FLOATS``: XLA fuses the ``n * n`` planes into one pass that reads its
  input once per plane, from cache after the first plane when the chunk fits."""
  chunk = batch_chunk(a.shape[0], a[0].size, TRANSFORM_CHUNK_FLOATS)
  return _over_batch_chunks(tiles, a, chunk,
                            (n * n, a.shape[0] * tiles_per_example, a.shape[-1]), 1)


def input_transform(x: jax.Array, pads, m: int) -> jax.Array:
  """``B^T d B`` of every input tile: ``(n * n, B * th * tw, C)``, computed in float32 and
  returned in ``x``'s dtype (the products' operand)."""
  _, th, tw, _, _ = _geometry(x.shape[1:3], pads, m)
  _, _, bt = matrices(m)
  n = m + 2

  def tiles(x):
    wide = x.astype(accumulation_dtype(x.dtype))
    wide = jnp.pad(wide, ((0, 0), (pads[0][0], th * m + 2 - x.shape[1] - pads[0][0]),
                          (pads[1][0], tw * m + 2 - x.shape[2] - pads[1][0]), (0, 0)))
    rows = _combine(bt, [wide[:, i:i + th * m:m] for i in range(n)])
    planes = [t for row in rows
              for t in _combine(bt, [row[:, :, j:j + tw * m:m] for j in range(n)])]
    return jnp.stack(planes).reshape(n * n, -1, x.shape[-1]).astype(x.dtype)
  return _tiles_by_chunks(tiles, x, n, th * tw)


def output_transform(prod: jax.Array, batch: int, m: int, th: int, tw: int, out_hw,
                     dtype) -> jax.Array:
  """``A^T M A`` of every tile's products ``(n * n, B * th * tw, O)``, laid out as the
  ``(B, out_h, out_w, O)`` map in ``dtype``."""
  at, _, _ = matrices(m)
  n = m + 2
  prod = prod.reshape(n, n, batch, th, tw, -1)
  rows = _combine(at, [prod[a] for a in range(n)])
  y = jnp.stack([jnp.stack(_combine(at, [row[b] for b in range(n)]), axis=3) for row in rows],
                axis=2)
  y = y.reshape(batch, th * m, tw * m, -1)
  return y[:, :out_hw[0], :out_hw[1]].astype(dtype)


def output_transform_transpose(g: jax.Array, m: int, th: int, tw: int) -> jax.Array:
  """The transpose of :func:`output_transform`: ``A g_tile A^T`` ``(n * n, P, O)`` of the
  output gradient, in its dtype (the products' operand)."""
  at, _, _ = matrices(m)
  n = m + 2

  def tiles(g):
    wide = g.astype(accumulation_dtype(g.dtype))
    wide = jnp.pad(wide, ((0, 0), (0, th * m - g.shape[1]), (0, tw * m - g.shape[2]), (0, 0)))
    wide = wide.reshape(g.shape[0], th, m, tw, m, -1)
    a = _transpose(at)
    rows = _combine(a, [wide[:, :, i] for i in range(m)])
    planes = [t for row in rows for t in _combine(a, [row[:, :, :, j] for j in range(m)])]
    return jnp.stack(planes).reshape(n * n, -1, g.shape[-1]).astype(g.dtype)
  return _tiles_by_chunks(tiles, g, n, th * tw)


def kernel_transform(kernel: jax.Array, m: int) -> jax.Array:
  """``G w G^T`` of the HWIO ``kernel``: ``(n * n, C, O)`` in its dtype, as one
  ``(n * n, 9)`` product over the taps (XLA's fusion of the ``n * n`` planes re-reads the
  kernel once per plane)."""
  _, gm, _ = matrices(m)
  taps = kernel.astype(accumulation_dtype(kernel.dtype)).reshape(9, -1)
  u = jnp.dot(jnp.asarray(_kron(gm, gm), taps.dtype), taps, precision="highest")
  return u.reshape(-1, *kernel.shape[2:]).astype(kernel.dtype)


def kernel_transform_transpose(du: jax.Array, m: int) -> jax.Array:
  """The transpose of :func:`kernel_transform`: ``(n * n, C, O)`` back to ``(3, 3, C, O)``."""
  _, gm, _ = matrices(m)
  planes = du.astype(accumulation_dtype(du.dtype)).reshape(du.shape[0], -1)
  taps = jnp.dot(jnp.asarray(_transpose(_kron(gm, gm)), planes.dtype), planes,
                 precision="highest")
  return taps.reshape(3, 3, *du.shape[1:])


def _products(v, u, transpose_v: bool = False):
  """One ``(P, C) @ (C, O)`` product per tile position (``V^T dM`` with ``transpose_v``),
  accumulated in float32: by oneDNN's matmul where it is built (as fast to 1.3x faster at
  these shapes, 1.45x transposed), else by XLA's batched dot."""
  if onednn.usable():
    return onednn.batched_matmul(v, u, transpose_v)
  return jax.lax.dot_general(v, u, (((1 if transpose_v else 2,), (1,)), ((0,), (0,))),
                             preferred_element_type=accumulation_dtype(v.dtype))


def _chunk(batch: int, tiles_per_example: int) -> int:
  """Examples per chunk of the products: ``PRODUCT_CHUNK_TILES`` tile rows."""
  return batch_chunk(batch, tiles_per_example, PRODUCT_CHUNK_TILES)


def _conv(x, kernel, pads):
  m, th, tw, out_h, out_w = _geometry(x.shape[1:3], pads)
  u = kernel_transform(kernel, m)

  def chunk_conv(x):
    prod = _products(input_transform(x, pads, m), u)
    return output_transform(prod, x.shape[0], m, th, tw, (out_h, out_w), x.dtype)
  return _over_batch_chunks(chunk_conv, x, _chunk(x.shape[0], th * tw),
                            (x.shape[0], out_h, out_w, kernel.shape[-1]), 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def winograd_conv(x: jax.Array, kernel: jax.Array, pads) -> jax.Array:
  """Stride-1 convolution of NHWC ``x`` with a 3 x 3 HWIO ``kernel`` padded by ``pads``
  (each at most ``MAX_PAD``), in ``x``'s dtype.

  Both gradients stay in the Winograd domain: the input gradient is this convolution of
  the output gradient with the flipped, transposed kernel, and the kernel gradient is one
  ``V^T dM`` product per tile position between the input's tiles and the output gradient's
  transposed tiles."""
  return _conv(x, kernel, pads)


def _winograd_fwd(x, kernel, pads):
  return _conv(x, kernel, pads), (x, kernel)


def _winograd_bwd(pads, residuals, g):
  x, kernel = residuals
  g = g.astype(x.dtype)
  flipped = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
  dx = _conv(g, flipped, tuple((2 - lo, 2 - hi) for lo, hi in pads))
  m, th, tw, _, _ = _geometry(x.shape[1:3], pads)

  def chunk_products(x, g):
    v = input_transform(x, pads, m)
    dm = output_transform_transpose(g, m, th, tw)
    return _products(v, dm, transpose_v=True)
  du = sum_over_batch_chunks(
      chunk_products, jnp.zeros(((m + 2) ** 2, *kernel.shape[2:]), accumulation_dtype(x.dtype)),
      x, g, _chunk(x.shape[0], th * tw))
  return dx, kernel_transform_transpose(du, m).astype(kernel.dtype)


winograd_conv.defvjp(_winograd_fwd, _winograd_bwd)
