"""Padding, strided window views and batch chunking shared by the convolutions and pools."""
import jax

# Feature extraction pushes a batch through a backbone in chunks of at most this many
# input pixels (5 images at 224 x 224): XLA:CPU's convolutions slow down once the
# activations leave the cache (docs/performance.md).
CPU_CHUNK_PIXELS = 2 ** 18


def explicit_pads(x_hw, kernel_hw, padding,
                  strides=(1, 1)) -> tuple[tuple[int, int], tuple[int, int]]:
  """``padding`` ("SAME", "VALID", an int or per-side pairs) as ``((top, bottom), (left,
  right))``."""
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
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


def batch_chunk(batch: int, size_per_example: int, budget: int) -> int:
  """The largest divisor of ``batch`` whose chunk holds at most ``budget`` (floats, pixels...)
  at ``size_per_example`` each; 1 if not even one example fits."""
  chunk = max(1, min(batch, budget // size_per_example))
  while batch % chunk:
    chunk -= 1
  return chunk


def sum_over_batch_chunks(term, total: jax.Array, x: jax.Array, g: jax.Array,
                          chunk: int) -> jax.Array:
  """``total + sum_j term(x_j, g_j)`` over consecutive batch chunks ``x_j``, ``g_j`` of
  ``chunk`` examples (``chunk`` divides the batch), by a loop: each chunk's temporaries
  are made and reduced while in cache, the way every chunked kernel gradient here sums.

  Each chunk is a dynamic slice of the arrays as they are: splitting them into
  ``(batches, chunk, ...)`` for a ``scan`` instead made XLA:CPU lay the split copy out
  anew, two more passes over the whole activation per layer.
  """
  def add_chunk(j, total):
    start = j * chunk
    return total + term(jax.lax.dynamic_slice_in_dim(x, start, chunk),
                        jax.lax.dynamic_slice_in_dim(g, start, chunk))
  return jax.lax.fori_loop(0, x.shape[0] // chunk, add_chunk, total)


def image_chunk(shape, fast: bool) -> int:
  """How many images of an NHWC batch ``shape`` a forward pass takes at a time: chunks of
  at most ``CPU_CHUNK_PIXELS`` input pixels with the XLA:CPU kernels, the whole batch with
  the reference ops (accelerators)."""
  batch, height, width = shape[:3]
  return batch_chunk(batch, height * width, CPU_CHUNK_PIXELS) if fast else batch
