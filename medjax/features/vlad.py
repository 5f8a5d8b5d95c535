"""VLAD encoding (Jégou et al. 2010) of sets of local CNN descriptors, for system 5.

Every descriptor is hard-assigned to its nearest of the ``k`` k-means centres and the
residuals ``x - c_j`` are summed per centre, giving ``k * D`` numbers per image. Optional
normalisations, applied in this order:

1. power normalisation ``sign(v) * |v|**alpha`` (Jégou et al. 2012; ``alpha=0.5`` is the signed
   square root) damps bursty components;
2. intra-normalisation (Arandjelović & Zisserman 2013): each centre's residual sum is
   L2-normalised on its own, so no single visual word dominates;
3. global L2 normalisation of the whole vector (the only one paper 5 names, hence the only one
   on by default).

A zero block or vector (no descriptor assigned, or none at all) stays zero instead of becoming
NaN. Descriptor sets are padded to a common ``N`` and the padding excluded with ``mask``, so
one compiled function serves images of every size. The batch axis can be sharded over a
``Mesh``; the computation is independent per image.
"""
import functools

import jax
import jax.numpy as jnp

from medjax import kernels
from medjax.features.lloyd import (_nearest, _sq_dist, chunk_of, cluster_sums, strided_shape,
                                   strided_view, unstride)
from medjax.features.norm import l2_normalize

# Measured on Zen 3 at VGG19's 196 descriptors per image (docs/performance.md).
IMAGES_PER_CHUNK = 16


@functools.partial(kernels.jit, static_argnames=("power_alpha", "intra_norm", "l2_norm",
                                                 "images_per_chunk"))
def vlad(descriptors: jax.Array, centers: jax.Array, mask: jax.Array | None = None, *,
         power_alpha: float | None = None, intra_norm: bool = False,
         l2_norm: bool = True, images_per_chunk: int = IMAGES_PER_CHUNK) -> jax.Array:
  """Encodes ``descriptors`` ``(B, N, D)`` against ``centers`` ``(k, D)`` into ``(B, k * D)``.

  ``mask`` ``(B, N)`` is True for real descriptors. The output is laid out centre-major:
  entries ``[j * D:(j + 1) * D]`` belong to centre ``j``. Images are assigned and summed
  ``images_per_chunk`` at a time (a divisor of ``B`` near it if there is one: padding the
  batch copies every descriptor), so each chunk's descriptors are still in cache when they
  are summed and the scatter-add writes a small block, where assigning the whole batch first
  reads every descriptor twice from memory (docs/performance.md).
  """
  b, n, d = descriptors.shape
  k = centers.shape[0]
  mask = jnp.ones((b, n), bool) if mask is None else mask
  per, n_chunks = strided_shape(b, images_per_chunk)
  # Chunk i holds images i, i + n_chunks, ... (lloyd's strided layout, as k-means' rows).
  strided = [strided_view(a, per, n_chunks) for a in (descriptors, mask)]
  slots = jnp.arange(per, dtype=jnp.int32)[:, None] * k

  def one_chunk(i):
    x, m = (chunk_of(a, i) for a in strided)
    flat = x.reshape(per * n, d)
    labels, _ = _nearest(_sq_dist(flat, jnp.sum(flat * flat, axis=-1), centers))
    sums, counts = cluster_sums(flat, (slots + labels.reshape(per, n)).reshape(-1), per * k,
                                m.reshape(-1))
    return sums.reshape(per, k, d) - counts.reshape(per, k, 1).astype(x.dtype) * centers

  v = unstride(jax.lax.map(one_chunk, jnp.arange(n_chunks)), b)
  if power_alpha is not None:
    v = jnp.sign(v) * jnp.abs(v) ** power_alpha
  if intra_norm:
    v = l2_normalize(v, axis=-1)
  v = v.reshape(b, k * d)
  if l2_norm:
    v = l2_normalize(v, axis=-1)
  return v
